"""The verification attempt log, written with group commit.

Every attempt (accepted, refused, rate-limited, malformed) is recorded. `append` returns only
once the attempt's transaction has committed, and the handler answers only after that, so a
`kill -9` can lose an attempt only if its answer was never sent ("nothing acknowledged is ever
lost"). One transaction per batch keeps the fsync cost per batch, not per request: a batch is
what is waiting when the previous commit returns (up to `max_rows`; no fixed delay by
default, so the event loop never sits idle waiting for a batch to fill), and while one batch
commits on the database's attempt-writer thread (one thread hop per batch), the next fills up.

A row that cannot be stored must never cost another row (issue #11, item 1): every text is
made storable when the row is built (`storable`: lone surrogates and undecodable bytes become
U+FFFD, control characters too, each column cut to its size), and if a batch still fails to
commit, its rows are retried one by one, each in its own transaction, so that only the broken
row's caller gets the exception (and answers 503: an attempt that was not logged is not
acknowledged either).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from license_server.db import attempts as attempt_rows
from license_server.db.connection import Connection
from license_server.db.database import Database

log = logging.getLogger(__name__)

PRUNE_WINDOW_MS = 60_000  # minute slices always fall inside one roll-up hour
# `licenses.last_access_at` is advanced at most once a minute per license by this process:
# to the second, a mix of many licenses updated a licenses row per license per second, each
# dirtying a page of the licenses table in the commit the answers wait for (issue #16, the
# 1,000-key mix). A minute is what a "last access" column tells anyone.
TOUCH_EVERY_SECONDS = 60
_TOUCHED_KEPT = 100_000  # licenses whose last update this process remembers


# Control characters (but tab and newline) and surrogates, which UTF-8 cannot encode.
_UNSTORABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def storable(text: str, limit: int) -> str:
    """`text` as the database will take it: valid UTF-8, no control characters, at most
    `limit` characters. Lone surrogates (a JSON `\\ud800`, or bytes that were not UTF-8 kept
    by surrogateescape) and controls become U+FFFD. ASCII without controls, the usual case, is
    returned as it is."""
    if len(text) > limit:
        text = text[:limit]
    if text.isascii() and text.isprintable():
        return text
    return _UNSTORABLE.sub("\ufffd", text)


@dataclass(slots=True)
class Attempt:
    at_ms: int
    endpoint: str  # native | whmcs
    source_ip: str
    reported_ip: str
    domain_raw: str
    domain: str
    directory: str
    license_id: int | None
    key_hash: bytes | None  # only for keys that matched no license
    product: str
    result: str  # active | invalid | expired | suspended | revoked | rate_limited | malformed
    reason: str
    client_version: str
    user_agent: str
    latency_us: int

    def row(self) -> tuple:
        """The columns in db.attempts.ATTEMPT_COLUMNS order, every text storable and cut to its
        column's size: the longest a valid request can send, a bound on what a hostile one can
        make the log store. Written out, not looped: this runs for every request."""
        return (
            self.at_ms,
            storable(self.endpoint, 16),
            storable(self.source_ip, 64),
            storable(self.reported_ip, 64),
            storable(self.domain_raw, 253),
            storable(self.domain, 253),
            storable(self.directory, 1024),
            self.license_id,
            self.key_hash,
            storable(self.product, 64),
            storable(self.result, 32),
            storable(self.reason, 64),
            storable(self.client_version, 64),
            storable(self.user_agent, 256),
            self.latency_us,
        )


class AttemptLog:
    def __init__(self, db: Database, max_rows: int = 500, max_delay: float = 0.0) -> None:
        self._db = db
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._pending: list[tuple[Attempt, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Set when waiting for more rows is pointless: a full batch, or stopping.
        self._flush_now = asyncio.Event()
        self._observers: list[Callable[[Sequence[Attempt]], None]] = []
        self._touched: dict[int, int] = {}  # license id -> last_access_at this process wrote

    def observe(self, observer: Callable[[Sequence[Attempt]], None]) -> None:
        """Call `observer` with every batch of attempts once it has committed, on the event
        loop, before their callers are answered. For in-memory consumers of the attempt stream
        (the anomaly detectors, metrics): it must be cheap and must not block, since the next
        batch waits for it. An observer that raises is logged and never fails the batch: the
        attempts are durable by then, and a broken consumer must not refuse checks."""
        self._observers.append(observer)

    @property
    def pending(self) -> int:
        """Attempts waiting for their commit (the metrics' queue depth)."""
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="attempt-log-writer")

    async def stop(self) -> None:
        """Let the writer finish its batch and write whatever is pending, then stop.

        Not a cancel: cancelling mid-transaction would roll back a batch whose callers then
        wait forever.
        """
        self._stopping = True
        self._flush_now.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def append(self, attempt: Attempt) -> None:
        """Record one attempt; returns when it is committed (raises if it could not be)."""
        if self._task is None or self._stopping:
            raise RuntimeError("attempt log is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, future))
        self._wakeup.set()
        if len(self._pending) >= self._max_rows:
            self._flush_now.set()
        await future

    async def _run(self) -> None:
        while not (self._stopping and not self._pending):
            await self._wakeup.wait()
            if self._max_delay and not self._flush_now.is_set():
                # Let a batch gather, but no longer than a full batch or a stop takes.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), self._max_delay)
            if not self._stopping:
                self._flush_now.clear()
            await self._flush()
            if len(self._pending) >= self._max_rows:
                self._flush_now.set()  # a full batch queued up during the commit
            if not self._pending and not self._stopping:
                self._wakeup.clear()

    async def _flush(self) -> None:
        batch, self._pending = self._pending[: self._max_rows], self._pending[self._max_rows :]
        if not batch:
            return
        try:
            await self._write(batch)
        except asyncio.CancelledError:
            self._fail(batch, RuntimeError("attempt log stopped"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                log.error("could not write a verification attempt: %s", exc)
                self._fail(batch, exc)
                return
            # One bad row must not cost the others: each row in its own transaction.
            failed = 0
            for item in batch:
                try:
                    await self._write([item])
                except asyncio.CancelledError:
                    self._fail(batch, RuntimeError("attempt log stopped"))
                    raise
                except Exception as row_exc:
                    failed += 1
                    self._fail([item], row_exc)
                else:
                    self._succeed([item])
            log.error(
                "could not write %d of %d verification attempts (%s); the others were written",
                failed,
                len(batch),
                exc,
            )
            return
        self._succeed(batch)

    async def _write(self, batch: list[tuple[Attempt, asyncio.Future[None]]]) -> None:
        seen: dict[int, int] = {}
        touched = self._touched
        for attempt, _ in batch:
            license_id = attempt.license_id
            if license_id is not None:
                # Attempts arrive in completion order, not start order: keep the newest.
                at = attempt.at_ms // 1000
                last = touched.get(license_id)
                if last is None or at >= last + TOUCH_EVERY_SECONDS:
                    seen[license_id] = max(at, seen.get(license_id, at))
        rows = [attempt.row() for attempt, _ in batch]
        await self._db.attempts.write(rows, list(seen.items()))
        if len(touched) + len(seen) > _TOUCHED_KEPT:
            touched.clear()  # forgetting costs one more update per license, no more
        touched.update(seen)

    def _succeed(self, batch: list[tuple[Attempt, asyncio.Future[None]]]) -> None:
        if self._observers:
            committed = [attempt for attempt, _ in batch]
            for observer in self._observers:
                try:
                    observer(committed)
                except Exception:
                    log.exception("an attempt-log observer failed; the attempts are logged")
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    @staticmethod
    def _fail(batch: list[tuple[Attempt, asyncio.Future[None]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def prune(
        self,
        retention_days: int,
        rollup: bool,
        now: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Fold attempts past retention into hourly counts (if `rollup`) and delete them.

        One short transaction per minute of old attempts, not one for all of them: the
        writer is shared with the verify path, whose answers wait for their attempts' commit.
        Returns early, between two transactions, once `stop` is set (shutdown).
        """
        cutoff_ms = int(((now or time.time()) - retention_days * 86400) * 1000)
        deleted = 0
        while stop is None or not stop.is_set():
            async with self._db.read() as conn:
                oldest = await attempt_rows.oldest_at_ms(conn)
            if oldest is None or oldest >= cutoff_ms:
                return deleted
            window_end = min(cutoff_ms, (oldest // PRUNE_WINDOW_MS + 1) * PRUNE_WINDOW_MS)
            deleted += await self._db.transaction(functools.partial(_prune, rollup, window_end))
        return deleted


async def _prune(rollup: bool, window_end: int, conn: Connection) -> int:
    # Instances pruning at once on PostgreSQL: the second waits, then finds the rows gone,
    # instead of counting them into the roll-up a second time.
    await conn.lock_name("attempt-prune")
    if rollup:
        await attempt_rows.roll_up_before(conn, window_end)
    return await attempt_rows.delete_before(conn, window_end)

"""The change feed: "license X changed", for every cache of every process.

The verifier caches licenses (and the service products, the ban list its bans) so that a check
reads only memory. A change made by another process (`run.py revoke` while the server runs)
must still be answered on the very next check. Every change is written to the change log in
the same transaction as the change itself (the service's single write path; ban/unban), so:

* a process announces its own changes to its listeners right after the commit;
* before trusting its caches, a check calls `catch_up()`: it compares the database's change
  signal (an integer every process on the host maps, `db.change_signal`) with the one it saw
  last, in memory; only when it moved does it read the newest seq, shared by the checks that
  arrive while it is pending but never by a check that arrived after it started (a change
  committed before a check arrived is always seen); when the seq advanced, the newer rows are
  read and their licenses dropped, nothing else.

Why a change log and not SQLite's `PRAGMA data_version`: data_version moves on every commit of
any connection, so the attempt log (a commit per batch) would flush the caches constantly; it
cannot say *which* license changed; and it does not exist on PostgreSQL. The log says what
changed, costs one primary-key read per catch-up, and a Redis publish can sit beside it later
(several instances) behind this same interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from license_server.db import changes as change_rows
from license_server.db.database import Database
from license_server.licensing.actors import Actor

T = TypeVar("T")

# Read at most this many rows on a catch-up; further behind, all caches are flushed instead.
FETCH_LIMIT = 1_000
assert FETCH_LIMIT <= change_rows.KEEP  # a gap we read must still be in the log


class ChangeKind(StrEnum):
    ISSUE = "issue"
    BIND = "bind"  # a first check bound a domain (and maybe an IP and directory)
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    UNSUSPEND = "unsuspend"
    EXPIRE = "expire"
    RENEW = "renew"
    REVOKE = "revoke"
    REISSUE = "reissue"
    IMPORT = "import"
    EDIT = "edit"  # staff changed the licensee, seats, notes or allow-rules
    RESET_REISSUES = "reset_reissues"
    RELEASE = "release"  # staff freed one binding
    PRODUCT = "product"  # license_id None: every license of every product may have changed
    BAN = "ban"  # license_id None: the ban list changed
    EVERYTHING = "everything"  # a reader fell behind the log (or first read): flush all


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # a ChangeKind value; unknown kinds (a newer server) count as EVERYTHING
    license_id: int | None = None
    actor: Actor | None = None  # known for this process's own changes only

    @property
    def all_licenses(self) -> bool:
        """Every cached license (and product) is stale."""
        return self.license_id is None and self.kind != ChangeKind.BAN

    @property
    def bans(self) -> bool:
        """The ban list is stale."""
        return self.license_id is None and self.kind != ChangeKind.PRODUCT


_KNOWN_KINDS = frozenset(kind.value for kind in ChangeKind)
Listener = Callable[[Change], None]


class ChangeFeed:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._listeners: list[Listener] = []
        self._seen: int | None = None  # newest seq delivered; None before the first read
        self._signal_seen: int | None = None  # the change signal when the last read began
        self._catch_up = Coalesced(self._read)
        self.reads = 0  # seq reads made (shows the coalescing; cheap to keep)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def announce(self, changes: Iterable[Change]) -> None:
        """This process's own committed changes, delivered at once (the log repeats them)."""
        for change in changes:
            self._deliver(change)

    async def catch_up(self) -> None:
        """Deliver every change committed before this call (by any process)."""
        signal = self._db.change_signal
        if self._seen is not None and signal is not None and signal.value() == self._signal_seen:
            return  # nothing published since the last read: memory only, no database hop
        await self._catch_up()

    async def _read(self) -> None:
        self.reads += 1
        # Taken before the read: a change published during it makes the next check read again.
        signal = self._db.change_signal
        self._signal_seen = signal.value() if signal is not None else None
        rows = None
        async with self._db.read() as conn:
            latest = await change_rows.latest_seq(conn)
            seen = self._seen
            if latest == seen:
                return
            if seen is not None and seen < latest <= seen + FETCH_LIMIT:
                rows = await change_rows.changes_after(conn, seen, FETCH_LIMIT)
        if rows is None:
            # First read (caches may hold what was loaded before it), too far behind, or a
            # log that went back (a restored backup): trust nothing cached.
            self._seen = latest
            self._deliver(Change(ChangeKind.EVERYTHING))
            return
        self._seen = max(latest, rows[-1]["seq"]) if rows else latest
        for row in rows:
            kind = row["kind"] if row["kind"] in _KNOWN_KINDS else ChangeKind.EVERYTHING
            self._deliver(Change(kind, row["license_id"]))

    def _deliver(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)


class Coalesced(Generic[T]):
    """Runs `fn` once for all callers waiting for it, each run starting after its callers came.

    A caller that arrives while a run is in flight waits for the *next* run (shared with every
    other caller arriving meanwhile), because the run in flight may have read the database
    before that caller's change was committed.
    """

    def __init__(self, fn: Callable[[], Awaitable[T]]) -> None:
        self._fn = fn
        self._waiting: asyncio.Future[T] | None = None  # callers of the run not started yet
        self._driver: asyncio.Task[None] | None = None

    async def __call__(self) -> T:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            # A result nobody awaits any more (cancelled callers) must not log a warning.
            self._waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._driver is None:
                self._driver = asyncio.create_task(self._drive(), name="coalesced-read")
        # Shielded: one cancelled caller must not cancel the run the others wait for.
        return await asyncio.shield(self._waiting)

    async def _drive(self) -> None:
        try:
            while self._waiting is not None:
                future, self._waiting = self._waiting, None  # later callers: the next run
                try:
                    result = await self._fn()
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            self._driver = None
            if self._waiting is not None:  # cancelled with callers queued: do not leave them
                self._waiting.cancel()
                self._waiting = None

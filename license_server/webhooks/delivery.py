"""The outbox's sender: claims due deliveries, sends them signed, records what the receiver said.

One `Deliverer` per process runs as a background task (app.py): woken right after a commit
that wrote an event (the change feed and the alerts tell it), and every `poll_seconds`
anyway, for retries and for events that other instances wrote. A round (`step`):

1. turns refused checks in the attempt log into verification.refused events
   (licensing/webhook_events.py `scan_refusals`), only while some endpoint subscribes;
2. claims up to `batch_size` due deliveries with a lease (db/webhooks.py `claim_due`), so
   that with several instances each delivery is made by exactly one of them;
3. sends them at once: POST, the body as stored, the Standard Webhooks headers signed with the
   webhook key (webhooks/signing.py), `timeout_seconds` in total, no redirects followed, at
   most 64 KiB of the answer read; the host's addresses are checked at connect time
   (webhooks/targets.py, SSRF). A 2xx answer is delivered; anything else failed;
4. records every attempt (status or error, duration, time) in one transaction with the
   outcome: delivered; or the next attempt after an exponential backoff with full jitter
   (`retry_base_seconds * 2^(n-1)`, capped at `retry_cap_seconds`, times a random number in
   [0, 1)); or failed after `max_attempts`. An endpoint's failures in a row are counted; at
   `pause_after_failures` it is paused (its deliveries wait) and a `webhook_failing` alert is
   raised in the same transaction.

Delivery is at least once: a process killed after the receiver answered but before the result
committed sends that delivery again once its lease runs out, with the same `webhook-id`
(receivers drop duplicates by it). The clock and the random source are injectable, so tests
advance time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from license_server.crypto.signing import SigningKey
from license_server.db import webhooks as webhook_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.licensing import webhook_events
from license_server.licensing.alerts import Alerts, AlertSignal, RaisedAlert, Severity, raise_alert
from license_server.settings import WebhookSettings
from license_server.webhooks.signing import signature_headers
from license_server.webhooks.targets import GuardedResolver, TargetRefused, check_url

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
LEASE_MARGIN_MS = 30_000  # a lease outlives the attempt's timeout by this much
REFUSALS_PER_ROUND = 1_000  # attempt-log rows turned into events per round, at most
PRUNE_EVERY_MS = 3_600_000
USER_AGENT = "license-server-webhooks/1"
ERROR_MAX = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    endpoint_id: int
    attempts_before: int
    at_ms: int
    status: int | None
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff_ms(failures: int, settings: WebhookSettings, rand: Callable[[], float]) -> int:
    """Full jitter (exponential backoff, a uniformly random wait up to the exponential)."""
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** (failures - 1))
    return int(rand() * ceiling * 1000)


class Deliverer:
    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
        key: SigningKey,
        *,
        alerts: Alerts | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        instance: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.key = key
        self.alerts = alerts
        self.clock = clock
        self.rand = rand
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._last_prune_ms = 0
        self.sent = 0  # attempts made by this process (the bench reads it)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def wake(self) -> None:
        self._wake.set()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self.settings.allow_private_targets),
            limit=self.settings.batch_size,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
            trust_env=False,  # never through a proxy named in the environment
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set (then call `wake()` so that a wait ends at once)."""
        while not stop.is_set():
            self._wake.clear()
            claimed = 0
            try:
                claimed = await self.step()
            except Exception:
                log.exception("webhook deliveries: a round failed; will retry")
            if stop.is_set():
                return
            if claimed >= self.settings.batch_size:
                continue  # more may be due: no wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def step(self) -> int:
        """One round; the number of deliveries claimed and attempted."""
        await self.scan_refusals()
        now = self.now_ms()
        lease = now + int(self.settings.timeout_seconds * 1000) + LEASE_MARGIN_MS

        async def claim(conn: Connection) -> list[dict]:
            return await webhook_rows.claim_due(
                conn, now_ms=now, lease_until_ms=lease, instance=self.instance,
                limit=self.settings.batch_size,
            )  # fmt: skip

        claimed = await self.db.transaction(claim)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(row) for row in claimed))
        await self._record(outcomes)
        return len(claimed)

    async def drain(self, max_rounds: int = 100) -> int:
        """Rounds until nothing is due (tests, the bench); the deliveries attempted."""
        total = 0
        for _ in range(max_rounds):
            claimed = await self.step()
            total += claimed
            if not claimed:
                break
        return total

    async def scan_refusals(self) -> int:
        now = self.now_ms()

        async def work(conn: Connection) -> int:
            return await webhook_events.scan_refusals(
                conn, per_minute=self.settings.refused_per_license_per_minute,
                batch=REFUSALS_PER_ROUND, now_ms=now,
            )  # fmt: skip

        return await self.db.transaction(work)

    async def _send(self, row: dict) -> Outcome:
        if self._session is None:
            await self.open()
        assert self._session is not None
        at_ms = self.now_ms()
        body = row["payload"].encode()
        headers = signature_headers(self.key, row["uid"], at_ms // 1000, body)
        headers["Content-Type"] = "application/json"
        status, error = None, ""
        started = time.perf_counter()
        try:
            url = check_url(
                row["url"], allow_http=self.settings.allow_http,
                allow_private=self.settings.allow_private_targets,
            )  # fmt: skip
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                read = 0
                while read < MAX_ANSWER_BYTES:
                    chunk = await answer.content.read(MAX_ANSWER_BYTES - read)
                    if not chunk:
                        break
                    read += len(chunk)
                status = answer.status
        except TargetRefused as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"timed out after {self.settings.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:ERROR_MAX]
        self.sent += 1
        duration = int((time.perf_counter() - started) * 1000)
        return Outcome(row["id"], row["endpoint_id"], int(row["attempts"]), at_ms, status,
                       error, duration)  # fmt: skip

    async def _record(self, outcomes: list[Outcome]) -> None:
        settings = self.settings
        now = self.now_ms()

        async def work(conn: Connection) -> list[tuple[AlertSignal, RaisedAlert]]:
            raised = []
            for outcome in outcomes:
                await webhook_rows.record_attempt(
                    conn, outcome.delivery_id, at_ms=outcome.at_ms, status=outcome.status,
                    error=outcome.error, duration_ms=outcome.duration_ms,
                )  # fmt: skip
                if outcome.delivered:
                    if await webhook_rows.mark_delivered(
                        conn, outcome.delivery_id, self.instance, outcome.status or 0, now
                    ):
                        await webhook_rows.reset_failures(conn, outcome.endpoint_id)
                    continue
                failures = outcome.attempts_before + 1
                gave_up = failures >= settings.max_attempts
                marked = await webhook_rows.mark_failed_attempt(
                    conn, outcome.delivery_id, self.instance, status=outcome.status,
                    error=outcome.error or f"HTTP {outcome.status}",
                    state="failed" if gave_up else "pending",
                    next_attempt_ms=now if gave_up else now + backoff_ms(
                        failures, settings, self.rand),
                )  # fmt: skip
                if marked:
                    alert = await self._count_failure(conn, outcome, now)
                    if alert is not None:
                        raised.append(alert)
            return raised

        for signal, alert in await self.db.transaction(work):
            log.warning("webhook endpoint paused: %s", signal.summary)
            if self.alerts is not None:
                self.alerts.announce(signal, alert)

    async def _count_failure(
        self, conn: Connection, outcome: Outcome, now: int
    ) -> tuple[AlertSignal, RaisedAlert] | None:
        """One more failure in a row for the endpoint; at the limit, pause it and raise the
        alert in this transaction."""
        row = await webhook_rows.count_failure(conn, outcome.endpoint_id)
        limit = self.settings.pause_after_failures
        if row is None or row["paused_ms"] is not None or row["consecutive_failures"] < limit:
            return None
        last = outcome.error or f"HTTP {outcome.status}"
        reason = f"{row['consecutive_failures']} failed attempts in a row; last: {last}"
        if not await webhook_rows.pause(conn, outcome.endpoint_id, reason[:500], now):
            return None
        signal = AlertSignal(
            "webhook_failing", f"endpoint:{outcome.endpoint_id}", Severity.HIGH,
            f"Webhook endpoint {outcome.endpoint_id} failed {row['consecutive_failures']} "
            "times in a row and was paused; its events wait until it is resumed.",
            {"endpoint_id": outcome.endpoint_id, "failures": row["consecutive_failures"],
             "last_status": outcome.status, "last_error": outcome.error[:ERROR_MAX]},
        )  # fmt: skip
        return signal, await raise_alert(conn, signal, now)

    async def prune(self) -> int:
        """Delivered deliveries past retention; at most once an hour unless forced by tests."""
        now = self.now_ms()
        older_than = now - self.settings.retention_days * 86_400_000

        async def work(conn: Connection) -> int:
            return await webhook_rows.prune(conn, older_than)

        self._last_prune_ms = now
        return await self.db.transaction(work)

    async def prune_if_due(self) -> int:
        if self.now_ms() - self._last_prune_ms < PRUNE_EVERY_MS:
            return 0
        return await self.prune()

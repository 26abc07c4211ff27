"""Helpers of the anomaly tests: attempts with an injected clock, fed through a real AttemptLog."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from license_server.anomaly.engine import AnomalyEngine
from license_server.licensing.attempt_log import Attempt, AttemptLog
from license_server.settings import AnomalySettings
from tests import store_helpers

T0 = 1_900_000_000_000  # an injected clock (ms): attempts carry their own time
MINUTE = 60_000
HOUR = 3_600_000


def attempt(at_ms: int, **fields) -> Attempt:
    values = {
        "endpoint": "native",
        "source_ip": "203.0.113.5",
        "reported_ip": "",
        "domain_raw": "",
        "domain": "shop.com",
        "directory": "",
        "license_id": None,
        "key_hash": None,
        "product": "mymod",
        "result": "active",
        "reason": "ok",
        "client_version": "",
        "user_agent": "",
        "latency_us": 1,
    }
    values.update(fields)
    return Attempt(at_ms=at_ms, **values)


class Rig:
    """An engine observing a real, running AttemptLog on the test's store."""

    def __init__(self, runtime, **settings) -> None:
        self.runtime = runtime
        self.engine = AnomalyEngine(
            AnomalySettings(**settings), runtime.db, runtime.alerts, runtime.licenses.clock
        )
        self.log = AttemptLog(runtime.db)
        self.log.observe(self.engine.observe)

    async def __aenter__(self) -> Rig:
        self.log.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.log.stop()

    async def send(self, attempts: Iterable[Attempt]) -> None:
        """Append and wait for the commit (one batch per call, as concurrent requests)."""
        await asyncio.gather(*(self.log.append(a) for a in attempts))

    async def alerts(self) -> list[dict]:
        """Let the alert task do its work once, then read the alerts table."""
        await self.engine.work()
        return await alerts(self.runtime.db)


async def alerts(db) -> list[dict]:
    rows = await store_helpers.rows(db, "alerts", order="id")
    for row in rows:
        row["evidence"] = json.loads(row["evidence"])
    return rows


def by_detector(rows: list[dict], detector: str) -> list[dict]:
    return [row for row in rows if row["detector"] == detector]

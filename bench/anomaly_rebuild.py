#!/usr/bin/env python3
"""The anomaly detectors' start-up rebuild at its bound: `rebuild_max_rows` attempts.

    python bench/anomaly_rebuild.py                       # 300,000 attempts, SQLite file
    python bench/anomaly_rebuild.py --store postgresql    # also a throw-away PostgreSQL
    python bench/anomaly_rebuild.py --rows 50000

Seeds a fresh database with the project's own code (`Database.migrate`, then the attempt
log's INSERT with rows made by `Attempt.row()`, in transactions of 10,000): `--rows` attempts
of `--licenses` licenses (their sites, networks, a few refusals and unknown keys) spread over
the last 20 hours. Then builds an `AnomalyEngine` on it as app.py does and times
`engine.rebuild()`: wall time, the process's CPU time, and the longest stall of the event
loop meanwhile (a loop-lag probe: a task sleeping 1 ms records how late it woke; what a verify
request served during the rebuild would wait at most). Needs PostgreSQL's binaries for
`--store postgresql` (tests/services.py's PostgresCluster starts and removes one).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_lag import LoopLag

from license_server.anomaly.engine import AnomalyEngine
from license_server.db.attempts import INSERT
from license_server.db.database import open_database
from license_server.licensing.attempt_log import Attempt
from license_server.settings import AnomalySettings

HOUR = 3_600_000
CHUNK = 10_000
OUTCOMES = [("active", "ok")] * 95 + [
    ("invalid", "domain_not_allowed"),
    ("invalid", "unknown_key"),
    ("revoked", "revoked"),
    ("rate_limited", "per-key"),
    ("invalid", "seat_limit"),
]


def rows(count: int, licenses: int, now_ms: int, seed: int):
    rng = random.Random(seed)
    start = now_ms - 20 * HOUR
    step = 20 * HOUR / count
    for n in range(count):
        lid = rng.randrange(1, licenses + 1)
        result, reason = rng.choice(OUTCOMES)
        unknown = reason == "unknown_key"
        domain = f"customer-{lid}.example.com"
        yield Attempt(
            int(start + n * step),
            "native",
            f"10.{lid >> 16 & 255}.{lid >> 8 & 255}.{rng.randrange(1, 255)}",
            "",
            domain,
            domain,
            "",
            None if unknown else lid,
            rng.randbytes(32) if unknown else None,
            "" if unknown else "mymod",
            result,
            reason,
            "2.3.0",
            "bench",
            900,
        ).row()


async def seed(location: str, count: int, licenses: int, now_ms: int) -> float:
    db = open_database(location)
    await db.open()
    started = time.perf_counter()
    try:
        await db.migrate()
        batch: list[tuple] = []
        for row in rows(count, licenses, now_ms, 1):
            batch.append(row)
            if len(batch) == CHUNK:
                async with db.write() as conn:
                    await conn.execute_many(INSERT, batch)
                batch = []
        if batch:
            async with db.write() as conn:
                await conn.execute_many(INSERT, batch)
    finally:
        await db.close()
    return time.perf_counter() - started


async def rebuild(location: str, now_ms: int) -> dict:
    db = open_database(location)
    await db.open()
    try:
        engine = AnomalyEngine(AnomalySettings(), db, None, lambda: now_ms / 1000)
        async with LoopLag() as lag:
            await asyncio.sleep(0.01)
            wall, cpu = time.perf_counter(), time.process_time()
            read = await engine.rebuild()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"read": read, "wall": wall, "cpu": cpu, "lag": lag.longest, "probes": lag.probes}
    finally:
        await db.close()


def report(store: str, seeded: float, result: dict) -> None:
    print(
        f"{store}: rebuilt from {result['read']:,} attempts in {result['wall']:.2f} s wall,"
        f" {result['cpu']:.2f} s CPU (this process; seeding took {seeded:.0f} s);"
        f" longest loop stall {result['lag'] * 1000:.0f} ms ({result['probes']} probes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=AnomalySettings().rebuild_max_rows)
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="anomaly-rebuild-") as workdir:
        location = str(Path(workdir) / "bench.sqlite3")
        seeded = asyncio.run(seed(location, args.rows, args.licenses, now_ms))
        report("sqlite", seeded, asyncio.run(rebuild(location, now_ms)))
    if args.store == "postgresql":
        from tests.services import PostgresCluster

        with PostgresCluster() as cluster:
            location = cluster.create_database()
            seeded = asyncio.run(seed(location, args.rows, args.licenses, now_ms))
            report("postgresql", seeded, asyncio.run(rebuild(location, now_ms)))


if __name__ == "__main__":
    main()

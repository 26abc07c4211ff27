#!/usr/bin/env python3
"""The longest event-loop stall of the anomaly engine's housekeeping at N licenses.

    python bench/anomaly_stall.py                   # 10,000 licenses, 30 hours of checks
    python bench/anomaly_stall.py --licenses 50000

Feeds the engine (no database) a steady stream: every license checks 0-4 times an hour from its
own site, for `--hours` hours of event time, in batches of 32 as the attempt log commits them.
After every batch the alert task's round runs as in the server (`engine.housekeep()`, which
folds a closed hour into the baseline and sweeps idle window entries every 10 minutes of event
time), inside a running event loop beside a loop-lag probe: a task that sleeps 1 ms and records
how late it woke. Printed: the longest single housekeeping step (CPU time, the stall every
verify request queued on the loop waits through), the longest probe lag (wall time: noisy on a
shared machine), and the longest full collection of the garbage collector (CPU; it lands in
whichever step allocates when it is due, and grows with the detectors' state).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_lag import LoopLag

from license_server.anomaly.engine import AnomalyEngine
from license_server.licensing.attempt_log import Attempt
from license_server.settings import AnomalySettings

HOUR = 3_600_000
T0 = 1_893_456_000_000
BATCH = 32
PRODUCTS = ("mymod", "billing", "tiny")


def attempts(licenses: int, hours: int, seed: int) -> list[Attempt]:
    rng = random.Random(seed)
    out = []
    for hour in range(hours):
        for lid in range(1, licenses + 1):
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
                at = T0 + hour * HOUR + rng.randrange(HOUR)
                domain = f"customer-{lid}.example.com"
                out.append(
                    Attempt(
                        at,
                        "native",
                        f"10.{lid >> 16 & 255}.{lid >> 8 & 255}.{lid & 255}",
                        "",
                        domain,
                        domain,
                        "",
                        lid,
                        None,
                        PRODUCTS[lid % 3],
                        "active",
                        "ok",
                        "2.3.0",
                        "",
                        0,
                    )
                )
    out.sort(key=lambda a: a.at_ms)
    return out


async def measure(engine: AnomalyEngine, stream: list[Attempt], whole: bool) -> dict:
    async with LoopLag() as lag:
        return await _measure(engine, stream, whole, lag)


async def _measure(engine: AnomalyEngine, stream: list[Attempt], whole: bool, lag) -> dict:
    longest, worst_at, observe_cpu = 0.0, 0, 0.0
    for start in range(0, len(stream), BATCH):
        batch = stream[start : start + BATCH]
        t = time.process_time()
        engine.observe(batch)
        observe_cpu += time.process_time() - t
        if whole:
            t = time.process_time()
            engine.housekeeping()  # every step in one go: one loop callback
            spent = time.process_time() - t
            if spent > longest:
                longest, worst_at = spent, batch[-1].at_ms
        else:
            steps = engine.housekeeping_steps()  # as `housekeep` runs them: a yield between
            while True:
                t = time.process_time()
                more = next(steps, StopIteration)
                spent = time.process_time() - t
                if spent > longest:
                    longest, worst_at = spent, batch[-1].at_ms
                if more is StopIteration:
                    break
                await asyncio.sleep(0)
        await asyncio.sleep(0)  # each batch is its own loop callback, as in the server
    return {
        "longest_housekeeping_s": longest,
        "at_hour": (worst_at - T0) / HOUR,
        "longest_probe_lag_s": lag.longest,
        "observe_us_per_attempt": observe_cpu / len(stream) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--whole",
        action="store_true",
        help="run housekeeping in one call (the simulator's way; the server yields between steps)",
    )
    args = parser.parse_args()
    stream = attempts(args.licenses, args.hours, args.seed)
    gc.freeze()  # the stream's half a million attempts are not the engine's garbage
    pauses: list[float] = []
    began = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.process_time()
        elif info["generation"] == 2:
            pauses.append(time.process_time() - began[0])

    gc.callbacks.append(timed)
    engine = AnomalyEngine(AnomalySettings())
    result = asyncio.run(measure(engine, stream, args.whole))
    print(f"{args.licenses} licenses, {args.hours} h, {len(stream):,} attempts")
    print(
        f"longest housekeeping step: {result['longest_housekeeping_s'] * 1000:.1f} ms CPU"
        f" (at event hour {result['at_hour']:.2f})"
    )
    print(f"longest loop-lag probe: {result['longest_probe_lag_s'] * 1000:.1f} ms wall")
    print(f"observe: {result['observe_us_per_attempt']:.1f} us CPU per attempt")
    print(
        f"full (generation 2) collections: {len(pauses)}, longest"
        f" {max(pauses, default=0) * 1000:.1f} ms CPU (inside whichever step triggered it)"
    )


if __name__ == "__main__":
    main()

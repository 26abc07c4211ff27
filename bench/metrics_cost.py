#!/usr/bin/env python3
"""CPU cost of the metrics on one verify request, measured in isolation (µs per request).

    python bench/metrics_cost.py

`bench/verify.py` measures the whole server; on a shared, noisy machine its CPU per request
moves by more than the few microseconds the metrics add, so this measures exactly what the
metrics add per check, in the process, many times over: the middleware's hook (two clock reads,
the app lookup, the bound children: an inc and an observe), one attempt in a committed batch
(a batch of 32, as under load), and the two cache counters. Divide by bench/verify.py's CPU per
request for the share.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt
from license_server.web.metrics import Metrics
from license_server.web.middlewares import _count

ROUNDS = 200_000
BATCH = 32


def per_call(fn, rounds: int = ROUNDS) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def main() -> None:
    app = web.Application()
    metrics = app[appkeys.METRICS] = Metrics()

    async def handler(request):  # pragma: no cover - never called
        return web.Response()

    route = app.router.add_post("/api/v1/verify", handler)
    request = SimpleNamespace(app=app, match_info=SimpleNamespace(route=route))
    started = time.perf_counter()
    hook = per_call(lambda: _count(request, 200, started))
    empty = per_call(lambda: None)
    attempt = Attempt(0, "native", "", "", "", "", "", 1, None, "", "active", "ok", "", "", 0)
    batch = [attempt] * BATCH
    observer = per_call(lambda: metrics.attempts_committed(batch), ROUNDS // BATCH) / BATCH
    counters = SimpleNamespace(hits=0)

    def count_hit() -> None:
        counters.hits += 1

    cache = per_call(count_hit) - empty
    total = hook - empty + observer + 2 * cache
    print(f"middleware hook         {hook - empty:6.2f} µs/request")
    print(f"committed-batch counts  {observer:6.2f} µs/attempt (batches of {BATCH})")
    print(f"cache hit/miss counters {2 * cache:6.2f} µs/request (two lookups)")
    print(f"total                   {total:6.2f} µs/request")


if __name__ == "__main__":
    main()

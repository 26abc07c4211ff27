#!/usr/bin/env python3
"""Python bytecodes per check, the real server against the floor: a count, not a timing.

    python bench/bytecodes.py               # the hot key, by module and by function
    python bench/bytecodes.py --mix         # the 1,000-key mix
    python bench/bytecodes.py --top 60      # more functions
    python bench/bytecodes.py --set LICENSE_SERVER_LOG_LEVEL=WARNING   # a setting changed

Starts the real server (production defaults, as bench/verify.py: `_server_env`) and the floor
server under `bench/bytecode_probe.py`, loads each with wrk as bench/verify.py does, and prints
the Python bytecodes the event-loop thread executed per request (requests counted as
aiohttp's `Application._make_request` calls in the same window), by module and by function,
the server's and the floor's side by side.

What it is for (issue #16, round 7): where the interpreter's work beyond the floor's is, as a
count that does not drift with this shared machine (two starts of one build differ by about
10 µs of CPU per check). Across a whole check the count tracks the interpreter's time: about
17 ns per bytecode for the server and the floor alike (round 6's perf figures for the
interpreter, 92 and 50 µs per check, over these counts). For one function
it does not: bytecodes differ in cost, calls into C count for nothing, and two rewrites
that cut their function's bytecodes by four fifths (the loops in C through `map`) ran 25-50%
slower under `timeit`. Judge a change by time (`timeit` in isolation, `bench/ab.py` in the
server); use this to find where to look. C code (the signature, SQLite, aiohttp's parser,
pydantic-core) and the other threads (the attempt writer's) are not counted. Batch-level
work (the attempt log's commit, the detectors' feed) is divided by the batch size the traced
server reached, which is about that of a normal run, since the load keeps every connection
busy.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import verify as bench  # noqa: E402  (bench/verify.py: the dataset, servers and wrk)
from stage_cpu import read_when_written, server_and_floor  # noqa: E402  (shared with it)

# aiohttp makes each request object here, once per request (a coroutine such as
# `_handle_request` is "called" again at every resumption).
REQUEST = ("web_app.py", "_make_request")


def _where(path: str) -> str:
    """A module's path as it reads best: `license_server/...`, `aiohttp/...`, `asyncio/...`."""
    for marker in ("site-packages/", f"{bench.ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def count(name: str, argv: list[str], env: dict, url: str, ready, args, work: Path) -> dict:
    """{'module': bytecodes per request, ...}, {'module:function': ...} and the requests."""
    out = work / f"{name}.json"
    env = {**env, "BYTECODE_OUT": str(out)}
    server = bench.Server(name, [sys.executable, str(BENCH / "bytecode_probe.py"), *argv], env,
                          work / f"{name}.log")  # fmt: skip
    try:
        server.wait_until(ready)
        bench.run_wrk(url, args.bodies, args.warmup, args.connections)
        os.kill(server.process.pid, signal.SIGUSR1)
        bench.run_wrk(url, args.bodies, args.duration, args.connections)
        os.kill(server.process.pid, signal.SIGUSR2)
        rows = read_when_written(out, 30)
    finally:
        server.stop()
    requests = sum(calls for path, fn, _, calls in rows if (Path(path).name, fn) == REQUEST)
    if not requests:
        raise SystemExit(f"{name}: no request was counted; see {work / (name + '.log')}")
    modules: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for path, fn, ops, _ in rows:
        modules[_where(path)] += ops / requests
        functions[f"{_where(path)}:{fn}"] += ops / requests
    return {"modules": modules, "functions": functions, "requests": requests}


def _table(title: str, server: collections.Counter, floor: collections.Counter, top: int) -> None:
    print(f"\n{title:<64}{'server':>9}{'floor':>9}")
    for key, ops in server.most_common(top):
        print(f"  {key[-62:]:<62}{ops:9.1f}{floor.get(key, 0.0):9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", action="store_true", help="the 1,000-key mix, not one key")
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=40, help="functions listed (default 40)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="an environment setting for the server (repeatable)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    settings = dict(item.partition("=")[::2] for item in args.set)
    server, floor = server_and_floor(
        args, "bytecodes-",
        lambda name, argv, env, url, ready, work: count(name, argv, env, url, ready, args, work),
        settings,
    )  # fmt: skip

    total_server = sum(server["modules"].values())
    total_floor = sum(floor["modules"].values())
    print(f"bytecodes per request, event-loop thread ({'1,000-key mix' if args.mix else 'hot key'}"
          f"; {server['requests']:,} and {floor['requests']:,} requests counted)")  # fmt: skip
    print(f"  server {total_server:,.0f}   floor {total_floor:,.0f}   "
          f"server ÷ floor {total_server / total_floor:.2f}")  # fmt: skip
    _table("by module", server["modules"], floor["modules"], 30)
    _table("by function", server["functions"], floor["functions"], args.top)


if __name__ == "__main__":
    main()

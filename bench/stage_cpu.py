#!/usr/bin/env python3
"""Where a check's CPU goes, stage by stage, measured inside the running server (issue #16).

    python bench/stage_cpu.py                 # the hot key, the pipeline's main stages
    python bench/stage_cpu.py --stages answer # inside the pipeline (parse, decision, ...)
    python bench/stage_cpu.py --mix           # the 1,000-key mix

Starts the real server (production defaults, as bench/verify.py: `_server_env`) and the floor
server under `bench/stage_probe.py`, loads each with wrk as bench/verify.py does, and prints
the event-loop thread's CPU time per request spent in each stage (self time, the probes' own
cost taken out), and what is left (aiohttp, the event loop, the glue between stages). A
sampling profiler (py-spy, the earlier rounds' tables) samples wall-clock time, so a stage
during which the thread was often preempted looks bigger than its CPU; this counts CPU only.

Figures to read with care: every probe is two system calls (~1.2 µs here, subtracted) and a
Python wrapper (not subtracted: ~0.5 µs per call, in the caller's line), and the whole server
runs 5-10% slower probed. Compare stages within one run, and with the floor's, not absolute
figures across runs: this machine's speed drifts by 10-20% within an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import verify as bench  # noqa: E402  (bench/verify.py: the dataset, servers and wrk)

# (module, function, label, sync|async): stages that run on the event loop and never suspend.
P, A, V, LOG, AIO = (
    "license_server.web.pipeline",
    "license_server.licensing.attempt_log",
    "license_server.web.verify",
    "license_server.web.access_log",
    "aiohttp.web_protocol",
)
STAGES = {
    "pipeline": [
        [P, "_answer", "pipeline: limits, parse, decide, answer", "async"],
        [P, "sign_answer", "signature over the answer", "sync"],
        [P, "new_attempt", "attempt record", "sync"],
        [LOG, "MaskedAccessLogger.log", "access log line", "sync"],
        [LOG, "BatchedLineWriter.flush", "access log write", "sync"],
        [A, "AttemptLog._succeed", "committed batch: detectors, metrics, wake-ups", "sync"],
        ["license_server.web.middlewares", "_count", "metrics hook", "sync"],
        ["license_server.web.middlewares", "_apply", "security headers", "sync"],
        [AIO, "RequestHandler.data_received", "aiohttp: request parsing", "sync"],
        [AIO, "RequestHandler.finish_response", "aiohttp: response (incl. send)", "async"],
    ],
    "answer": [
        [P, "_answer", "pipeline glue", "async"],
        [V, "NativeEndpoint.parse", "parse and validate", "async"],
        ["license_server.licensing.verifier", "Verifier.check", "decision", "async"],
        [V, "NativeEndpoint.decided", "answer bytes and response", "async"],
        [
            "license_server.web.rate_limit",
            "RateLimiter.before_reading",
            "rate limit per IP",
            "async",
        ],
        ["license_server.web.rate_limit", "RateLimiter.for_key", "rate limit per key", "async"],
        [
            "license_server.web.rate_limit",
            "RateLimiter.after_decision",
            "rate limit, guesses",
            "async",
        ],
        ["license_server.licensing.verifier", "Verifier.lookup", "key lookup (cached)", "sync"],
        [P, "_check_headers", "header flood check", "sync"],
    ],
}
FLOOR_STAGES = [
    ["aiohttp.web_request", "BaseRequest.post", "floor: body read and form parse", "async"],
    [AIO, "RequestHandler.data_received", "aiohttp: request parsing", "sync"],
    [AIO, "RequestHandler.finish_response", "aiohttp: response (incl. send)", "async"],
]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid` (utime + stime from /proc)."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def read_when_written(path: Path, seconds: float):
    """The JSON a probe writes to `path` once signalled (within `seconds`)."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return json.loads(path.read_text())


def measure(name: str, argv: list[str], env: dict, spec: list, url: str, ready, args, work):
    out = work / f"{name}.json"
    env = {**env, "STAGE_SPEC": json.dumps(spec), "STAGE_OUT": str(out)}
    server = bench.Server(name, [sys.executable, str(BENCH / "stage_probe.py"), *argv], env,
                          work / f"{name}.log")  # fmt: skip
    try:
        server.wait_until(ready)
        bench.run_wrk(url, args.bodies, args.warmup, args.connections)
        pid = server.process.pid
        os.kill(pid, signal.SIGUSR1)
        before = thread_cpu(pid)
        run = bench.run_wrk(url, args.bodies, args.duration, args.connections)
        after = thread_cpu(pid)
        os.kill(pid, signal.SIGUSR2)
        result = read_when_written(out, 10)
    finally:
        server.stop()
    requests = run.requests
    main = str(pid)
    main_us = (after[main] - before[main]) / requests * 1e6
    others = sum(v - before.get(k, 0.0) for k, v in after.items() if k != main)
    pair_us = result["probe_pair_ns"] / 1000
    print(f"\n{name}: {run.requests_per_s:,.0f} req/s; event-loop thread {main_us:.1f} µs per "
          f"request, other threads {others / requests * 1e6:.1f}")  # fmt: skip
    staged = 0.0
    rows = []
    for label, ns in result["spent_ns"].items():
        calls = result["calls"][label] / requests
        us = ns / requests / 1000 - calls * pair_us
        staged += us
        rows.append((us, label, calls))
    for us, label, calls in sorted(rows, reverse=True):
        print(f"  {label:<48}{us:7.1f} µs   ({calls:.2f} calls per request)")
    total_calls = sum(result["calls"].values()) / requests
    rest = result["window_ns"] / requests / 1000 - staged - total_calls * pair_us
    print(f"  {'everything else (aiohttp, the loop, glue)':<48}{rest:7.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", choices=sorted(STAGES), default="pipeline")
    parser.add_argument("--mix", action="store_true", help="the 1,000-key mix, not one key")
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    server_and_floor(
        args, "stage-cpu-",
        lambda name, argv, env, url, ready, work: measure(
            name, argv, env, STAGES[args.stages] if name == "server" else FLOOR_STAGES, url,
            ready, args, work),
    )  # fmt: skip


def server_and_floor(args, prefix: str, run, settings: dict[str, str] | None = None) -> tuple:
    """The dataset (`args.licenses`, bench/verify.py's cache) and the bodies (`args.bodies`:
    the hot key, or with `args.mix` the 1,000 keys) in a temporary directory; then
    `run(name, argv, env, url, ready, work)` for the real server ("server", production
    defaults and `settings`), then for the floor server ("floor server"). Their results."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        cache = Path(tempfile.gettempdir()) / "license-server-bench"
        data = bench.prepare_dataset(args.licenses, cache, work)
        pairs = data.sample if args.mix else data.sample[:1]
        args.bodies = work / "bodies.txt"
        args.bodies.write_text("".join(bench._body(key, domain) + "\n" for key, domain in pairs))
        hot = bench._body(*data.sample[0]).encode()

        port = bench._free_port()
        url = f"http://127.0.0.1:{port}{bench.VERIFY_PATH}"
        env = {**bench._server_env(data.database, data.keys_dir, port), **(settings or {})}
        server = run("server", ["run.py", "serve"], env, url,
                     lambda: bench._http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200,
                     work)  # fmt: skip

        port = bench._free_port()
        url = f"http://127.0.0.1:{port}{bench.VERIFY_PATH}"
        floor = ["bench/floor_server.py", "--port", str(port), "--database", str(work / "f.db")]
        return server, run("floor server", floor, env, url,
                           lambda: bench._http("POST", url, hot)[0] == 200, work)  # fmt: skip


if __name__ == "__main__":
    main()

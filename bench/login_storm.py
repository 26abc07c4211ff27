#!/usr/bin/env python3
"""Does a login storm slow verification? Issue #12: "Signing in must not slow verification (a
login storm beside a verify load leaves verify's p99 within 2x of quiet)" (bench/README.md); and
a key-guessing storm on verify itself.

    python bench/login_storm.py                 # ~1 minute: four 10 s measurements
    python bench/login_storm.py --hold 0        # every 429 at once (no tarpit)
    python bench/login_storm.py --duration 5 --storm-connections 32

One run, on the machinery of bench/verify.py (imported, not copied: dataset, server, wrk and
CPU accounting): a copy of its seeded database (a product and 10,000 active licenses) plus one
staff account made with `StaffAccounts.create_account` (a real Argon2id hash), the real server
(`run.py serve`, production defaults but verify's raised rate limits, and
`proxy.trusted_proxies = 127.0.0.1` so that a storm can come "through a proxy" from many
addresses), then four measurements of the same verify load (wrk, hot key, 32 connections):

- quiet:               verify alone;
- storm, spread:       beside a second wrk POSTing wrong passwords to /admin/login
                       (`bench/login_storm.lua`), each request from a new X-Forwarded-For address
                       and mostly for unknown emails, so neither throttle stops it and every such
                       attempt costs one Argon2id derivation (the dummy hash);
- storm, one IP:       the same storm from one address: the per-IP throttle (5 per minute)
                       answers 429 after five, before any hashing;
- keys, one IP:        beside a second wrk POSTing a new unknown license key to /api/v1/verify
                       from one address each time: the unknown-key budget (10 per minute)
                       answers "invalid" ten times, then 429 (each signed and logged).

Every 429 is held for `rate_limit.refusal_hold_seconds` (1 s, web/tarpit.py) before it is
sent; `--hold 0` measures the server without the hold.

For each: verify's req/s, p50, p99, the server's CPU (cores used, and the event-loop thread's
share apart from all other threads: Argon2 runs in threads), and the storm's attempts/s and
answers by status (400: refused after hashing; 429: throttled). Then verify's p99 under each
storm ÷ quiet, against issue #12's limit of 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
import verify as vb  # noqa: E402  (bench/verify.py: its dataset, server, wrk and CPU helpers)

STORM_SCRIPT = BENCH / "login_storm.lua"
LOGIN_PATH = "/admin/login"
STAFF_EMAIL = "storm.admin@bench.example.com"
STAFF_PASSWORD = "Quiet-Harbour-7319!"  # passes the policy; the storm never sends it
TARGET_P99_RATIO = 2.0  # issue #12
ONE_IP = "203.0.113.7"
WRK_TIMEOUT_MS = 2000.0  # wrk's default --timeout, which bench/verify.py's run_wrk keeps


# --- seeding: the staff account -----------------------------------------------------------


async def _add_staff(settings) -> None:
    from license_server.licensing.actors import SYSTEM
    from license_server.runtime import open_runtime
    from license_server.staff.accounts import StaffAccounts

    async with open_runtime(settings) as runtime:
        service = runtime.licenses
        accounts = StaffAccounts(
            runtime.db, service.write, service.cipher, service.hasher, runtime.once
        )
        await accounts.create_account(
            STAFF_EMAIL, "Storm Admin", "admin", STAFF_PASSWORD, actor=SYSTEM
        )


def _sign_in(port: int, password: str, ip: str) -> int:
    """One sign-in through the proxy header; the status (303 = password accepted)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = urllib.parse.urlencode({"email": STAFF_EMAIL, "password": password})
        conn.request("POST", LOGIN_PATH, body, {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"http://127.0.0.1:{port}",
            "X-Forwarded-For": ip,
        })  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- CPU by thread ------------------------------------------------------------------------


def thread_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(event-loop thread, all other threads) utime + stime of one process, in seconds.

    The main thread (tid == pid) runs the event loop; the others are the database thread,
    the log thread and the default executor's, where `asyncio.to_thread` runs Argon2id."""
    tasks = vb.PROC / str(pid) / "task"
    try:
        tids = [entry.name for entry in tasks.iterdir()]
    except OSError:
        return None
    main = others = 0
    for tid in tids:
        try:
            text = (tasks / tid / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        if tid == str(pid):
            main += ticks
        else:
            others += ticks
    tick = os.sysconf("SC_CLK_TCK")
    return main / tick, others / tick


# --- the storm ----------------------------------------------------------------------------


@dataclass
class Storm:
    attempts: int
    per_s: float
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float
    socket_errors: int

    def describe(self) -> str:
        shown = ", ".join(f"{code}: {n:,}" for code, n in sorted(self.statuses.items()))
        hashed = self.statuses.get(400, 0)
        throttled = self.statuses.get(429, 0)
        return (
            f"{self.attempts:,} attempts, {self.per_s:,.1f}/s ({shown}); "
            f"hashed (400) {hashed:,}, throttled (429) {throttled:,}; "
            f"storm latency p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
            + (f"; {self.socket_errors:,} socket errors/timeouts" if self.socket_errors else "")
        )


# The storms: failed sign-ins from a new address each (hashed), the same from one address
# (throttled), and guessed license keys on verify from one address (out of guesses: 429).
SPREAD, ONE_ADDRESS, KEYS = "spread", "one address", "keys"


def start_storm(port: int, seconds: int, connections: int, kind: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "BENCH_ORIGIN": f"http://127.0.0.1:{port}",
        "BENCH_STAFF_EMAIL": STAFF_EMAIL,
        "BENCH_SPREAD": "1" if kind == SPREAD else "0",
        "BENCH_ONE_IP": ONE_IP,
        "BENCH_TARGET": "verify" if kind == KEYS else "sign-in",
    }
    path = vb.VERIFY_PATH if kind == KEYS else LOGIN_PATH
    argv = [
        "wrk", "--threads", str(min(vb.WRK_THREADS, connections)),
        "--connections", str(connections), "--duration", f"{seconds}s",
        # An attempt waits for one of few hashing slots: far longer than wrk's 2 s default.
        "--timeout", "60s", "--latency", "--script", str(STORM_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_storm(process: subprocess.Popen, timeout: float) -> Storm:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise vb.BenchError("the storm's wrk did not finish") from None
    if process.returncode != 0:
        raise vb.BenchError(f"storm wrk failed ({process.returncode}): {err.strip()}")
    parsed = vb.parse_wrk(out)
    statuses = {int(c): int(n) for c, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return Storm(
        attempts=parsed.requests,
        per_s=parsed.requests_per_s,
        statuses=statuses,
        p50_ms=parsed.p50_ms,
        p99_ms=parsed.p99_ms,
        socket_errors=parsed.socket_errors,
    )


# --- measurements -------------------------------------------------------------------------


def settle(base: str, limit: float = 60.0) -> float:
    """Wait until the server answers at once again; the seconds waited.

    aiohttp does not cancel a handler when its client goes away, so every sign-in still in
    flight when a storm's wrk stops is hashed afterwards (16 connections: ~16 x 0.2 s); the
    next measurement must not pay for them."""
    started = time.monotonic()
    fast = 0
    while fast < 10 and time.monotonic() - started < limit:
        before = time.monotonic()
        vb._http("GET", f"{base}/readyz")
        fast = fast + 1 if time.monotonic() - before < 0.02 else 0
        time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Result:
    name: str
    verify: vb.Measurement
    cores: float  # the server's CPU seconds per second of the measurement
    loop_cores: float  # of which its event-loop thread
    storm: Storm | None


def measure(name: str, scenario: vb.Scenario, args, storm_kind: str | None) -> Result:
    storm = None
    if storm_kind is not None:
        # The storm starts first and outlasts the verify warm-up and measurement.
        storm = start_storm(
            args.port, args.warmup + args.duration + 1, args.storm_connections, storm_kind
        )
        time.sleep(0.5)
    try:
        vb.run_wrk(scenario.url, scenario.bodies, args.warmup, args.connections)
        since_ms = int(time.time() * 1000)
        pid = scenario.server.process.pid
        cpu_before, threads_before = scenario.server.cpu_seconds(), thread_cpu_seconds(pid)
        started = time.monotonic()
        result = vb.run_wrk(scenario.url, scenario.bodies, args.duration, args.connections)
        elapsed = time.monotonic() - started
        cpu_after, threads_after = scenario.server.cpu_seconds(), thread_cpu_seconds(pid)
        storm_result = finish_storm(storm, args.duration + 60) if storm is not None else None
        storm = None
        waited = settle(f"http://127.0.0.1:{args.port}")
    finally:
        if storm is not None:
            storm.kill()
            storm.wait()
    cores = loop = float("nan")
    if cpu_before is not None and cpu_after is not None:
        cores = (cpu_after - cpu_before) / elapsed
        if result.requests:
            result.cpu_us = (cpu_after - cpu_before) * 1e6 / result.requests
    if threads_before is not None and threads_after is not None:
        loop = (threads_after[0] - threads_before[0]) / elapsed
    # A request wrk gave up on is a socket error and has no latency: with 1% of them or more,
    # the true p99 is at least the timeout (50%: the p50), whatever wrk prints.
    timed_out = result.socket_errors / max(1, result.requests + result.socket_errors)
    if timed_out >= 0.01:
        result.p99_ms = max(result.p99_ms, WRK_TIMEOUT_MS)
    if timed_out >= 0.5:
        result.p50_ms = max(result.p50_ms, WRK_TIMEOUT_MS)
    time.sleep(0.2)  # the last attempts are committed before their answers
    # The verify load's own rows (the key-guessing storm's come through the proxy's header).
    note = vb.check_attempts(scenario, result, since_ms, args.connections, source_ip="127.0.0.1")
    print(
        f"  {name:<16} verify {result.requests_per_s:>7,.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  server {cores:.2f} cores (event loop {loop:.2f}){note}",
        flush=True,
    )
    if result.non_2xx or result.socket_errors:
        errors = f"{result.socket_errors:,} socket errors or timeouts ({timed_out:.1%})"
        print(f"  WARNING {name}: {result.non_2xx:,} non-2xx, {errors}")
    if storm_result is not None:
        print(f"  {'':<16} storm  {storm_result.describe()}", flush=True)
        print(f"  {'':<16} after the storm the server answered at once again in {waited:.1f} s")
    return Result(name, result, cores, loop, storm_result)


def combine(runs: list[Result]) -> Result:
    """One line per phase: medians over rounds (the figures themselves for one round); the
    storm's answers by status summed."""
    storms = [r.storm for r in runs if r.storm is not None]
    storm = None
    if storms:
        statuses: dict[int, int] = {}
        for one in storms:
            for code, n in one.statuses.items():
                statuses[code] = statuses.get(code, 0) + n
        storm = Storm(
            attempts=sum(one.attempts for one in storms),
            per_s=statistics.median(one.per_s for one in storms),
            statuses=statuses,
            p50_ms=statistics.median(one.p50_ms for one in storms),
            p99_ms=statistics.median(one.p99_ms for one in storms),
            socket_errors=sum(one.socket_errors for one in storms),
        )
    return Result(
        runs[0].name,
        vb.summary([r.verify for r in runs]),
        statistics.median(r.cores for r in runs),
        statistics.median(r.loop_cores for r in runs),
        storm,
    )


def report(results: list[Result], rounds: int) -> None:
    quiet = results[0]
    print()
    print(
        "POST /api/v1/verify (hot key) beside a storm of failed sign-ins on POST /admin/login"
        " or of guessed keys on POST /api/v1/verify"
        + (f", median of {rounds} rounds" if rounds > 1 else "")
    )
    print(
        f"{'':<16}{'req/s':>9}{'p50':>11}{'p99':>11}{'p99 ÷ quiet':>13}{'server':>9}"
        f"{'loop':>7}{'storm/s':>9}{'hashed':>8}{'429':>8}"
    )
    for r in results:
        v = r.verify
        ratio = v.p99_ms / quiet.verify.p99_ms
        storm = (
            f"{r.storm.per_s:>9,.1f}{r.storm.statuses.get(400, 0):>8,}"
            f"{r.storm.statuses.get(429, 0):>8,}"
            if r.storm
            else f"{'-':>9}{'-':>8}{'-':>8}"
        )
        print(
            f"{r.name:<16}{v.requests_per_s:>9,.0f}{v.p50_ms:>8.2f} ms{v.p99_ms:>8.2f} ms"
            f"{ratio:>13.2f}{r.cores:>9.2f}{r.loop_cores:>7.2f}{storm}"
        )
    print()
    for r in results[1:]:
        ratio = r.verify.p99_ms / quiet.verify.p99_ms
        verdict = "within" if ratio <= TARGET_P99_RATIO else "NOT within"
        print(
            f"  {r.name}: verify p99 {r.verify.p99_ms:.2f} ms ÷ quiet {quiet.verify.p99_ms:.2f} ms"
            f" = {ratio:.2f}  (issue #12: at most {TARGET_P99_RATIO:.0f}x: {verdict})"
        )


def run(args) -> None:
    if shutil.which("wrk") is None:
        raise vb.BenchError("wrk is not installed (apt-get install wrk)")
    servers: list[vb.Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="login-storm-bench-"))
    try:
        cache_dir = None if args.no_cache else args.cache_dir
        dataset = vb.prepare_dataset(args.licenses, cache_dir, workdir)
        env = vb._server_env(dataset.database, dataset.keys_dir, port=args.port)
        env["LICENSE_SERVER_PROXY_TRUSTED_PROXIES"] = "127.0.0.1"
        if args.hold is not None:
            env["LICENSE_SERVER_RATE_LIMIT_REFUSAL_HOLD_SECONDS"] = str(args.hold)
        started = time.perf_counter()
        asyncio.run(_add_staff(vb._settings(env)))
        print(
            f"database: {args.licenses:,} licenses and one staff account (added, Argon2id hash "
            f"included, in {time.perf_counter() - started:.2f} s)",
            flush=True,
        )
        server = vb.Server(
            "license server", [sys.executable, "run.py", "serve"], env, workdir / "server.log"
        )
        servers.append(server)
        base = f"http://127.0.0.1:{args.port}"
        server.wait_until(lambda: vb._http("GET", f"{base}/readyz")[0] == 200)
        url = f"{base}{vb.VERIFY_PATH}"
        hot_key = dataset.sample[0]
        vb.check_active(url, [hot_key])
        # The account exists and its password verifies (303 to the second factor); a wrong
        # one is refused (400). From an address of their own: the storm's budget is untouched.
        right = _sign_in(args.port, STAFF_PASSWORD, "198.51.100.1")
        wrong = _sign_in(args.port, "Not-The-Password-1!", "198.51.100.2")
        if (right, wrong) != (303, 400):
            raise vb.BenchError(
                f"sign-in check: right password {right} (want 303), wrong {wrong} (want 400)"
                f"\n{server.log_tail()}"
            )
        bodies = workdir / "hot.txt"
        bodies.write_text(vb._body(*hot_key) + "\n")
        scenario = vb.Scenario("verify, 1 key", url, bodies, server, dataset.database, [])
        print(
            f"verify: wrk {min(vb.WRK_THREADS, args.connections)} threads, {args.connections} "
            f"connections; storm: wrk {args.storm_connections} connections, 1 in 4 attempts for "
            f"the staff account; {args.duration} s per measurement after {args.warmup} s of "
            f"warm-up; {os.cpu_count()} CPUs",
            flush=True,
        )
        phases = (("quiet", None), ("storm, spread", SPREAD), ("storm, one IP", ONE_ADDRESS),
                  ("keys, one IP", KEYS))  # fmt: skip
        runs: dict[str, list[Result]] = {name: [] for name, _ in phases}
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}")
            for name, spread in phases:
                runs[name].append(measure(name, scenario, args, spread))
        report([combine(results) for results in runs.values()], args.rounds)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify's latency quiet and beside a storm of failed sign-ins (issue #12)."
    )
    positive = vb._positive
    parser.add_argument("--licenses", type=positive, default=vb.BASE_LICENSES)
    parser.add_argument("--duration", type=positive, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=positive, default=2, help="seconds before each")
    parser.add_argument("--connections", type=positive, default=32, help="verify's connections")
    parser.add_argument(
        "--storm-connections", type=positive, default=16, help="the storm's connections"
    )
    parser.add_argument(
        "--rounds", type=positive, default=1, help="the four in turn R times; report medians"
    )
    parser.add_argument(
        "--hold", type=float, default=None, metavar="S",
        help="the server's rate_limit.refusal_hold_seconds (default: the production 1 s; "
             "0: every 429 at once, as before the tarpit)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=vb.DEFAULT_CACHE)
    parser.add_argument("--no-cache", action="store_true", help="seed afresh, keep nothing")
    args = parser.parse_args(argv)
    args.port = vb._free_port()
    return args


def main(argv=None) -> int:
    return vb.run_main("bench/login_storm.py", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark of `POST /api/v1/verify` beside a bare aiohttp handler and the floor (bench/README.md).

    python bench/verify.py                      # 10,000 licenses in the database
    python bench/verify.py --licenses 1000000   # the same with 1,000,000

One run: seed N active, domain-bound licenses with the project's own code (or reuse a seeded
copy from the cache), start the real server (`run.py serve`), `bench/bare_server.py` and
`bench/floor_server.py` as subprocesses on free ports of 127.0.0.1, then measure each with wrk
(same threads, connections, duration and POST body, a warm-up first):

- bare               aiohttp handler that reads the body and answers {"status": "ok"}
- floor              only what a check cannot avoid: parse, sign the answer, durable row
- verify, 1 key      one active license, answered from the server's caches after warm-up
- verify, 1000 keys  1,000 different active licenses in turn (more cache misses and lookups)

and print req/s, p50, p99 and the server's CPU time per request (utime + stime of its process
tree from /proc, over the measurement) of each, the throughput ratios against bare and the
distance to the floor (verify's CPU per request ÷ the floor's). The attempt logs of the real
and the floor server are checked afterwards: every answered request has a row, all `active`.

`--store postgresql` measures, in the same run, the same two loads on the server over a
throw-away PostgreSQL (the same dataset, seeded there with the same code) as one instance and
as two (`--workers 2`, rate limits shared through a throw-away redis-server), and prints each
against bare beside the SQLite server's figures. It starts PostgreSQL with the test suite's
`tests/services.PostgresCluster` (imported from tests/: this script runs from a checkout with
the test dependencies installed), with durability switched back on.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA_SCRIPT = BENCH / "post.lua"
VERIFY_PATH = "/api/v1/verify"

PRODUCT_CODE = "bench"
NONCE = "bench-nonce-0123456789abcdef"  # 16-64 url-safe characters; any fixed one will do
MIX_KEYS = 1000
BATCH_ROWS = 10_000
WRK_THREADS = 2
# The targets of issue #16: throughput against bare, CPU per request against the floor.
TARGET_RATIO_HOT = 0.40
TARGET_RATIO_MIX = 0.30
TARGET_FLOOR_CPU = 1.2
TARGET_WORKERS_CPU = 1.10
ONE_WORKER = "verify, 1 key, 1 worker"
BASE_LICENSES = 10_000
# Bump when the seeded data changes, so that an old cached database is not reused.
CACHE_VERSION = 3  # 2: sealed e-mails, expiry dates; 3: migrations renumbered at merge
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "license-server-bench"


class BenchError(Exception):
    """The benchmark cannot go on; the message is one line."""


# --- seeding ------------------------------------------------------------------------------


@dataclass
class Dataset:
    database: Path
    keys_dir: Path
    sample: list[tuple[str, str]]  # (license key, bound domain) of active licenses
    seed_seconds: float
    cached: bool


class _Statements:
    """Stands in for the connection while rows are built: collects what the project's own
    `db.licenses` functions execute, to run it as one `executemany` per statement.

    aiosqlite costs a thread round trip per statement (~0.1 ms here), which would make
    1,000,000 licenses take several minutes; batched, the SQL is still the project's own.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}  # in first-seen order: licenses before bindings

    async def execute(self, sql: str, parameters) -> None:
        self.calls.setdefault(sql, []).append(tuple(parameters))

    async def execute_many(self, sql: str, rows) -> None:
        self.calls.setdefault(sql, []).extend(tuple(parameters) for parameters in rows)

    async def run(self, conn) -> None:
        for sql, rows in self.calls.items():
            await conn.execute_many(sql, rows)


def _domain(index: int) -> str:
    # Not a development host (*.example is one, example.com is not): each takes a real seat.
    return f"customer-{index:07d}.example.com"


async def _seed(settings, count: int, sample_size: int, progress: bool) -> list[tuple[str, str]]:
    # Imported here: the project is on sys.path only once main() has put it there.
    from license_server.db.licenses import NewLicense, insert_licenses, upsert_binding
    from license_server.licensing.domains import normalise_domain
    from license_server.licensing.license_keys import MAX_LICENSE_ID, make_license_key
    from license_server.licensing.models import KeyKind, Status
    from license_server.licensing.service import KEY_HASH_PURPOSE
    from license_server.licensing.specs import ProductSpec
    from license_server.runtime import open_runtime

    assert normalise_domain(_domain(1)) == _domain(1)
    async with open_runtime(settings) as runtime:
        service = runtime.licenses
        product = await service.create_product(
            ProductSpec(code=PRODUCT_CODE, name="Benchmark module", seats=1)
        )
        # Random ids like the service's own, so rows spread over the table the same way.
        ids = random.Random(count).sample(range(1, MAX_LICENSE_ID + 1), count)
        now = service.now()
        sample: list[tuple[str, str]] = []
        next_report = count // 10
        for start in range(0, count, BATCH_ROWS):
            statements = _Statements()
            rows, bindings = [], []
            for index in range(start, min(count, start + BATCH_ROWS)):
                license_id, domain = ids[index], _domain(index)
                key = make_license_key(runtime.keyring, product.key_prefix, license_id)
                email, email_index = service.seal_email(license_id, f"billing@{domain}")
                rows.append(
                    NewLicense(
                        id=license_id,
                        product_id=product.id,
                        key_hash=service.hasher.hash(KEY_HASH_PURPOSE, key),
                        key_encrypted=service.cipher.encrypt("licenses", "key_encrypted", key),
                        key_kind=KeyKind.SIGNED.value,
                        status=Status.ACTIVE.value,
                        licensee_name=f"Customer {index}",
                        licensee_email_encrypted=email,
                        licensee_email_index=email_index,
                        # Spread over the next three years: the admin's expiry filters
                        # (bench/admin_pages.py) select a share of them, not all or none.
                        expires_at=now + 86_400 * (30 + index % 1065),
                        seats=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                bindings.append((license_id, domain))
                if index < sample_size:
                    sample.append((key, domain))
            # The batch's licenses in one call, as the service's bulk issue writes them.
            await insert_licenses(statements, rows)
            for license_id, domain in bindings:
                await upsert_binding(
                    statements,
                    license_id,
                    kind="domain",
                    value=domain,
                    raw_value=domain,
                    is_dev=False,
                    now=now,
                )
            async with runtime.db.write() as conn:
                await statements.run(conn)
            done = min(count, start + BATCH_ROWS)
            if progress and next_report and done >= next_report and done < count:
                print(f"  seeded {done:,} / {count:,}", flush=True)
                next_report += count // 10
    return sample


def _settings(env: dict[str, str]):
    from license_server.settings import load_settings

    config = ROOT / "settings.toml"
    return load_settings(config if config.is_file() else None, env)


def _seed_into(directory: Path, count: int) -> tuple[list[tuple[str, str]], float]:
    directory.mkdir(mode=0o700, parents=True)
    env = _server_env(directory / "license_server.db", directory / "keys", port=8080)
    started = time.perf_counter()
    sample = asyncio.run(_seed(_settings(env), count, min(MIX_KEYS, count), count >= 100_000))
    seconds = time.perf_counter() - started
    (directory / "sample.json").write_text(json.dumps(sample))
    (directory / "meta.json").write_text(json.dumps({"licenses": count, "seed_seconds": seconds}))
    return sample, seconds


def _copy_database(source: Path, target: Path) -> None:
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("license_server.db", "license_server.db-wal"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    shutil.copytree(source / "keys", target / "keys")  # keeps the 0700 / 0600 modes


def prepare_dataset(count: int, cache_dir: Path | None, workdir: Path) -> Dataset:
    """A fresh copy of a database of `count` licenses, and the keys that open it."""
    run_dir = workdir / "data"
    if cache_dir is None:
        sample, seconds = _seed_into(run_dir, count)
        return Dataset(run_dir / "license_server.db", run_dir / "keys", sample, seconds, False)
    entry = cache_dir / f"licenses-{count}-v{CACHE_VERSION}"
    cached = (entry / "meta.json").is_file()
    if not cached:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = cache_dir / f".{entry.name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _seed_into(partial, count)
            shutil.rmtree(entry, ignore_errors=True)
            partial.rename(entry)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    meta = json.loads((entry / "meta.json").read_text())
    sample = [tuple(pair) for pair in json.loads((entry / "sample.json").read_text())]
    # The run writes attempts into its database: it gets a copy, the cached one stays pristine.
    _copy_database(entry, run_dir)
    return Dataset(
        run_dir / "license_server.db", run_dir / "keys", sample, meta["seed_seconds"], cached
    )


# --- servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(
    database: Path,
    keys_dir: Path,
    port: int,
    workers: int = 1,
    redis_url: str | None = None,
    event_loop: str = "auto",
) -> dict[str, str]:
    """Production defaults (settings.toml), but for what the bench must change: all load
    comes from one IP and one key, so the per-IP and per-key limits are raised (not switched
    off: their cost is part of a check), to per-second windows so the moving window's list of
    timestamps stays as short as a real client's. The access log stays on at INFO, written to
    the server's log file."""
    # Inherited LICENSE_SERVER_* (signing keys in the environment...) would change the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICENSE_SERVER_")}
    env.update(
        LICENSE_SERVER_HOST="127.0.0.1",
        LICENSE_SERVER_PORT=str(port),
        LICENSE_SERVER_DATABASE=str(database),
        LICENSE_SERVER_KEYS_DIR=str(keys_dir),
        LICENSE_SERVER_RATE_LIMIT_PER_IP="50000/second",
        LICENSE_SERVER_RATE_LIMIT_PER_KEY="50000/second",
        LICENSE_SERVER_LOG_LEVEL="INFO",
        LICENSE_SERVER_WORKERS=str(workers),
        LICENSE_SERVER_EVENT_LOOP=event_loop,
    )
    if redis_url:
        env["LICENSE_SERVER_RATE_LIMIT_STORAGE_URI"] = redis_url
    return env


class RedisServer:
    """A throw-away redis-server on loopback: several workers share their rate limits."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("--workers > 1 needs redis-server (apt-get install redis-server)")
        self.port = _free_port()
        self.url = f"async+redis://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- CPU time of a process tree -----------------------------------------------------------

PROC = Path("/proc")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 `state` is index 0)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile, or no /proc (macOS)
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def process_tree_cpu_seconds(root: int) -> float | None:
    """utime + stime of `root` and every live descendant, in seconds; None without /proc.

    /proc/PID/stat counts all threads of a process (the database and log threads included).
    cutime + cstime are added too: they hold the time of children that have exited and been
    waited for, so a worker that ends between two readings is not lost from the difference.
    """
    if _stat_fields(root) is None:
        return None
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        fields = _stat_fields(pid)
        if fields is not None:
            # Fields 14-17: utime, stime, cutime, cstime, in clock ticks.
            ticks += sum(int(n) for n in fields[11:15])
        todo.extend(children.get(pid, ()))
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            # Own session: Ctrl+C reaches only this script, which then stops the server itself.
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server and the processes it started (workers)."""
        return process_tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # aiohttp shuts down gracefully on SIGTERM
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0):
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None, b""


def _body(key: str, domain: str) -> str:
    return urllib.parse.urlencode({"license_key": key, "domain": domain, "nonce": NONCE})


def check_active(url: str, pairs: list[tuple[str, str]]) -> None:
    for key, domain in pairs:
        status, raw = _http("POST", url, _body(key, domain).encode())
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if status != 200 or answer.get("status") != "active":
            shown = raw[:300].decode(errors="replace")
            raise BenchError(
                f"the server does not answer 200 active for a seeded license ({domain}): "
                f"HTTP {status} {shown}"
            )


# --- load ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_us: float | None = None  # server CPU time per request; None where /proc is missing
    db_cpu_us: float | None = None  # PostgreSQL's CPU time per request (its server processes)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> Measurement:
    def number(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"unexpected wrk output (no match for {pattern!r}):\n{output}")
        return match.group(1)

    def percentile(p: int) -> float:
        match = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if match is None:
            raise BenchError(f"unexpected wrk output (no {p}% latency):\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Measurement(
        requests_per_s=float(number(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=percentile(50),
        p99_ms=percentile(99),
        requests=int(number(r"^\s*(\d+) requests in")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(url: str, bodies: Path, seconds: int, connections: int) -> Measurement:
    argv = [
        "wrk",
        "--threads",
        str(min(WRK_THREADS, connections)),
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--latency",
        "--script",
        str(LUA_SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_BODIES": str(bodies)}
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    return parse_wrk(result.stdout)


def attempt_results(
    database: Path | str, since_ms: int, source_ip: str | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(result, reason) -> (attempts, distinct licenses) logged by the server since a time
    (from `source_ip` only, if given)."""
    select = "SELECT result, reason, COUNT(*), COUNT(DISTINCT license_id) "
    if source_ip is None:
        sql = select + "FROM verification_attempts WHERE at_ms >= ? GROUP BY result, reason"
        params: tuple = (since_ms,)
    else:
        sql = select + (
            "FROM verification_attempts WHERE at_ms >= ? AND source_ip = ? GROUP BY result, reason"
        )
        params = (since_ms, source_ip)
    if _is_url(database):
        from tests.store_helpers import query  # reads PostgreSQL the way the tests do

        rows = query(database, sql, params)
    else:
        uri = f"file:{database}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=30) as conn:
            rows = conn.execute(sql, params).fetchall()
    return {(result, reason): (n, licenses) for result, reason, n, licenses in rows}


def _is_url(database: Path | str) -> bool:
    return str(database).startswith(("postgresql://", "postgres://"))


# --- the run ------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    url: str
    bodies: Path
    server: Server
    # The database whose attempt log must show every answer as active (a path or a URL).
    attempts: Path | str | None
    runs: list[Measurement]
    # PostgreSQL's postmaster, whose process tree's CPU time is the database's share.
    db_pid: int | None = None
    connections: int | None = None  # wrk's; None: --connections


def check_attempts(
    scenario: Scenario,
    result: Measurement,
    since_ms: int,
    connections: int,
    source_ip: str | None = None,
) -> str:
    """Every answered request has its row (answers wait for their COMMIT), all `active`
    (counting only the rows from `source_ip`, if given: other traffic beside the load)."""
    assert scenario.attempts is not None
    logged = attempt_results(scenario.attempts, since_ms, source_ip)
    # wrk closes its connections when its time is up: a request still being read then is
    # logged as malformed/client_gone and never answered. Anything else not active is a bug.
    cut_off, _ = logged.pop(("malformed", "client_gone"), (0, 0))
    refused = {k: v for k, v in logged.items() if k[0] != "active"}
    if refused:
        shown = ", ".join(f"{r}/{why}: {n:,}" for (r, why), (n, _) in refused.items())
        raise BenchError(f"{scenario.name}: the server did not answer active: {shown}")
    if cut_off > 2 * connections:  # the warm-up's stop may land in this window too
        raise BenchError(f"{scenario.name}: {cut_off:,} requests cut off, more than in flight")
    attempts = sum(n for n, _ in logged.values())
    answered = result.requests - result.non_2xx
    if attempts < answered:
        raise BenchError(
            f"{scenario.name}: {answered:,} answers but only {attempts:,} attempts logged"
        )
    licenses = sum(distinct for _, distinct in logged.values())
    cut = f", {cut_off} cut off by wrk's stop" if cut_off else ""
    return f"  ({attempts:,} attempts logged, all active{cut}; licenses used: {licenses:,})"


def timed_wrk(server: Server, url: str, bodies: Path, seconds: int, connections: int):
    """`run_wrk`, with the server's CPU time per request over the run (None without /proc)."""
    before = server.cpu_seconds()
    result = run_wrk(url, bodies, seconds, connections)
    after = server.cpu_seconds()
    if before is not None and after is not None and result.requests:
        result = replace(result, cpu_us=(after - before) * 1e6 / result.requests)
    return result


def measure(scenario: Scenario, args) -> Measurement:
    connections = scenario.connections or args.connections
    run_wrk(scenario.url, scenario.bodies, args.warmup, connections)
    since_ms = int(time.time() * 1000)
    db_before = process_tree_cpu_seconds(scenario.db_pid) if scenario.db_pid else None
    result = timed_wrk(scenario.server, scenario.url, scenario.bodies, args.duration, connections)
    db_after = process_tree_cpu_seconds(scenario.db_pid) if scenario.db_pid else None
    if db_before is not None and db_after is not None and result.requests:
        result = replace(result, db_cpu_us=(db_after - db_before) * 1e6 / result.requests)
    problems = []
    if result.non_2xx:
        problems.append(f"{result.non_2xx:,} non-2xx answers")
    if result.socket_errors:
        problems.append(f"{result.socket_errors:,} socket errors (connect/read/write/timeout)")
    note = ""
    if scenario.attempts is not None:
        time.sleep(0.2)  # the last attempts of the run are committed before their answers
        note = check_attempts(scenario, result, since_ms, connections)
    db = f" + PostgreSQL {_cpu(result.db_cpu_us)}" if scenario.db_pid else ""
    print(
        f"  {scenario.name:<23} {result.requests_per_s:>9,.0f} req/s  "
        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
        f"CPU {_cpu(result.cpu_us)}{db}/req{note}",
        flush=True,
    )
    for problem in problems:
        print(f"  WARNING {scenario.name}: {problem}", flush=True)
    return result


def _cpu(us: float | None) -> str:
    return "    n/a" if us is None else f"{us:4.0f} µs"


def summary(runs: list[Measurement]) -> Measurement:
    """One figure per metric: the median over rounds (the value itself for one round)."""
    cpu = [r.cpu_us for r in runs if r.cpu_us is not None]
    db_cpu = [r.db_cpu_us for r in runs if r.db_cpu_us is not None]
    return Measurement(
        requests_per_s=statistics.median(r.requests_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        requests=sum(r.requests for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        cpu_us=statistics.median(cpu) if cpu else None,
        db_cpu_us=statistics.median(db_cpu) if db_cpu else None,
    )


def _over(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def paired_cpu(runs: list[Measurement], base: list[Measurement]) -> float | None:
    """The median over rounds of each round's CPU per request ÷ the base's in that round.

    The scenarios of a round run one after the other, minutes apart from the next round's: on
    a shared machine whose speed drifts between rounds (this one's floor measured 127 to
    162 µs within an hour), the ratio of two medians can set one round's server against
    another round's floor. Paired within rounds, the drift cancels. Printed beside the ratio
    of medians; None without CPU figures."""
    pairs = [_over(r.cpu_us, b.cpu_us) for r, b in zip(runs, base, strict=True)]
    ratios = [ratio for ratio in pairs if ratio is not None]
    return statistics.median(ratios) if ratios else None


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(args, scenarios: list[Scenario], result_file: Path | None) -> None:
    bare, floor, hot, mix = (summary(s.runs) for s in scenarios[:4])
    mix_name = scenarios[3].name
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print()
    print(f"POST {VERIFY_PATH}, {args.licenses:,} licenses in the database{rounds}")
    print(f"{'':<20}{'req/s':>10}{'p50':>12}{'p99':>12}{'CPU/req':>12}{'CPU ÷ bare':>12}")
    for scenario, m in zip(scenarios[:4], (bare, floor, hot, mix), strict=True):
        rate, p50, p99 = m.requests_per_s, m.p50_ms, m.p99_ms
        times_bare = _over(m.cpu_us, bare.cpu_us)
        shown = "n/a" if times_bare is None else f"{times_bare:.2f}"
        print(
            f"{scenario.name:<20}{rate:>10,.0f}{p50:>9.2f} ms{p99:>9.2f} ms"
            f"{_cpu(m.cpu_us):>12}{shown:>12}"
        )
    print()
    ratio_hot = hot.requests_per_s / bare.requests_per_s
    ratio_mix = mix.requests_per_s / bare.requests_per_s
    ratio_floor = floor.requests_per_s / bare.requests_per_s
    print("throughput against bare (req/s ÷ bare req/s):")
    print(
        f"  verify, 1 key      {ratio_hot:.2f}  "
        f"(target >= {TARGET_RATIO_HOT:.2f}: {_verdict(ratio_hot >= TARGET_RATIO_HOT)})"
    )
    print(
        f"  {mix_name:<18} {ratio_mix:.2f}  "
        f"(target >= {TARGET_RATIO_MIX:.2f}: {_verdict(ratio_mix >= TARGET_RATIO_MIX)})"
    )
    print(f"  floor server       {ratio_floor:.2f}")
    floor_hot, floor_mix = _over(hot.cpu_us, floor.cpu_us), _over(mix.cpu_us, floor.cpu_us)
    if floor_hot is None or floor_mix is None:
        print("distance to the floor: n/a (no /proc to read CPU times from)")
    else:
        print("distance to the floor (CPU per request ÷ the floor's):")
        print(
            f"  verify, 1 key      {floor_hot:.2f}  (target <= {TARGET_FLOOR_CPU:.1f}: "
            f"{_verdict(floor_hot <= TARGET_FLOOR_CPU)})"
        )
        print(f"  {mix_name:<18} {floor_mix:.2f}")
        if args.rounds > 1:
            floor_runs = scenarios[1].runs
            paired_hot = paired_cpu(scenarios[2].runs, floor_runs)
            paired_mix = paired_cpu(scenarios[3].runs, floor_runs)
            if paired_hot is not None and paired_mix is not None:
                print("  paired by round (the median of each round's own ratio):")
                print(f"    verify, 1 key    {paired_hot:.2f}")
                print(f"    {mix_name:<16} {paired_mix:.2f}")
    if result_file is not None:
        record = {
            "ratio_hot": ratio_hot,
            "ratio_mix": ratio_mix,
            "cpu_hot": _over(hot.cpu_us, bare.cpu_us),
            "cpu_mix": _over(mix.cpu_us, bare.cpu_us),
        }
        _compare_with_base(args, record, mix_name, result_file)


def report_workers(args, scenarios: list[Scenario]) -> None:
    """N workers against one, both on the same Redis (issue #16: CPU per check within 10%).

    Two figures. At the same C connections each of N workers sees 1/N of the load one worker
    was measured under: its group commits, Redis batches and loop iterations are 1/N as full,
    so each costs more per check even with nothing shared. At N x C connections each worker
    sees what one worker saw: what is left is what running N costs (the shared SQLite write
    lock and Redis, N loops on the cores). The target is judged on that one; both print."""
    (one_scenario,) = (s for s in scenarios if s.name == ONE_WORKER)
    (scaled_scenario,) = (s for s in scenarios if s.connections)
    one = summary(one_scenario.runs)
    print()
    print(f"{args.workers} workers against 1, the same rate-limit store (redis), hot key:")
    c, n = args.connections, args.workers
    split = f"at {c} connections (each worker sees 1/{n} of the load)"
    scaled = f"at {n * c} connections (each worker sees what 1 did at {c})"
    for label, many, judged in (
        (split, summary(scenarios[2].runs), False),
        (scaled, summary(scaled_scenario.runs), True),
    ):
        ratio = _over(many.cpu_us, one.cpu_us)
        print(f"  {label}:")
        print(
            f"    req/s {many.requests_per_s:,.0f} against {one.requests_per_s:,.0f}"
            f" ({many.requests_per_s / one.requests_per_s:.2f}x)"
        )
        if ratio is None:
            print("    CPU per request: n/a (no /proc to read CPU times from)")
            continue
        verdict = (
            f"target <= {TARGET_WORKERS_CPU:.2f}: {_verdict(ratio <= TARGET_WORKERS_CPU)}"
            if judged
            else "the load split, not the workers' own cost"
        )
        cpu = f"{_cpu(many.cpu_us)} against {_cpu(one.cpu_us)}"
        print(f"    CPU per request {cpu}: {ratio:.2f} ({verdict})")


def _loop_name(choice: str) -> str:
    """What `event_loop = choice` runs here (license_server.cli.new_event_loop's rule)."""
    if choice != "auto":
        return choice
    return "uvloop (auto)" if importlib.util.find_spec("uvloop") else "asyncio (auto)"


def report_stores(args, scenarios: list[Scenario]) -> None:
    """The SQLite server and the PostgreSQL instances side by side, each against bare.

    On PostgreSQL part of a check's work runs in the database server's processes: `+ PG` is
    their CPU time per request, and the total (server + PG) is what compares with SQLite, whose
    database work runs inside the server's own process."""
    bare = summary(scenarios[0].runs)
    print()
    print(
        f"stores: POST {VERIFY_PATH}, {args.licenses:,} licenses; each against bare aiohttp "
        f"({bare.requests_per_s:,.0f} req/s, {_cpu(bare.cpu_us).strip()}/req)"
    )
    print(
        f"{'':<24}{'req/s':>9}{'p99':>12}{'CPU/req':>10}{'+ PG':>9}{'total':>9}"
        f"{'req/s ÷ bare':>14}{'CPU ÷ bare':>12}"
    )
    figures: dict[str, Measurement] = {}
    for scenario in scenarios[2:]:
        m = summary(scenario.runs)
        name = scenario.name.replace("verify, ", "sqlite, ")
        figures[name] = m
        total = None if m.cpu_us is None else m.cpu_us + (m.db_cpu_us or 0.0)
        times_bare = _over(total, bare.cpu_us)
        print(
            f"{name:<24}{m.requests_per_s:>9,.0f}{m.p99_ms:>9.2f} ms"
            f"{_cpu(m.cpu_us):>10}{_cpu(m.db_cpu_us) if scenario.db_pid else '':>9}"
            f"{_cpu(total):>9}{m.requests_per_s / bare.requests_per_s:>14.2f}"
            f"{'n/a' if times_bare is None else f'{times_bare:.2f}':>12}"
        )
    print()
    print("PostgreSQL against SQLite (req/s ÷ the SQLite server's req/s, same load):")
    for load in ("1 key", scenarios[3].name.removeprefix("verify, ")):
        sqlite = figures[f"sqlite, {load}"].requests_per_s
        shown = "  ".join(
            f"{instances}: {figures[f'{instances}, {load}'].requests_per_s / sqlite:.2f}"
            for instances, _, _ in pg_setups("")
        )
        print(f"  {load:<10} {shown}")


def _compare_with_base(args, figures: dict, mix_name: str, result_file: Path) -> None:
    """Keep this run's ratios; beside a run of another N, show the last 10,000-license ones.

    Throughput ratios must not fall more than 10%; CPU per request (as a multiple of bare's,
    which cancels out how fast the machine happens to be) must not rise more than 10%.
    """
    record = {
        "licenses": args.licenses,
        "connections": args.connections,
        "duration": args.duration,
        "warmup": args.warmup,
        # The figures compared are always the SQLite server's (--store postgresql measures
        # PostgreSQL besides them, in report_stores).
        "store": "sqlite",
        "workers": args.workers,
        **figures,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    base_file = result_file.with_name(f"result-{BASE_LICENSES}.json")
    if args.workers != 1:
        result_file = result_file.with_name(f"result-{args.licenses}-w{args.workers}.json")
        base_file = result_file.with_name(f"result-{BASE_LICENSES}-w{args.workers}.json")
    if args.licenses != BASE_LICENSES and base_file.is_file():
        base = json.loads(base_file.read_text())
        same = ("connections", "duration", "warmup")
        if (
            all(base.get(name) == getattr(args, name) for name in same)
            and (base.get("workers", 1) == args.workers)
            and (
                base.get("store", "sqlite") == "sqlite"  # runs from before --store: sqlite
            )
        ):
            print(f"last {BASE_LICENSES:,}-license run ({base['at']}):")
            for label, key, sign, what in (
                ("verify, 1 key", "ratio_hot", -1, "req/s ÷ bare"),
                (mix_name, "ratio_mix", -1, "req/s ÷ bare"),
                ("verify, 1 key", "cpu_hot", 1, "CPU ÷ bare"),
                (mix_name, "cpu_mix", 1, "CPU ÷ bare"),
            ):
                now, then = figures.get(key), base.get(key)
                if now is None or not then:  # no /proc, or a base run from before CPU figures
                    continue
                change = (now - then) / then * 100
                verdict = "within" if change * sign <= 10 else "NOT within"
                limit = "below" if sign < 0 else "above"
                print(
                    f"  {label:<18} {what:<12} {then:.2f} -> {now:.2f} here ({change:+.1f}%; "
                    f"target: at most 10% {limit}, {verdict})"
                )
    try:
        result_file.write_text(json.dumps(record))
    except OSError:
        pass


def pg_setups(redis_url: str) -> tuple[tuple[str, int, str | None], ...]:
    """(label, instances, rate-limit storage) of each PostgreSQL server measured."""
    return (("pg ×1", 1, None), ("pg ×1 redis", 1, redis_url), ("pg ×2 redis", 2, redis_url))


def start_postgres_servers(
    args, workdir: Path, servers: list[Server], cleanups: list, redis: RedisServer | None
) -> list[Scenario]:
    """A throw-away PostgreSQL seeded with the same dataset, and the server on it as one
    instance and as two (`--workers 2`, rate limits shared through redis): their scenarios."""
    from tests import services  # the test suite's throw-away cluster (see the docstring)

    # The tests' cluster runs without durability (fsync off); the SQLite server commits with
    # synchronous=FULL, so the PostgreSQL it is compared with makes its commits durable too.
    services.TEST_SETTINGS = {
        **services.TEST_SETTINGS,
        "fsync": "on",
        "full_page_writes": "on",
        "synchronous_commit": "on",
    }
    cluster = services.PostgresCluster()  # always private: this one is thrown away
    cluster.start()
    cleanups.append(cluster.stop)
    assert cluster.process is not None
    dsn = cluster.create_database()
    keys_dir = workdir / "pg-keys"
    count = args.licenses
    started = time.perf_counter()
    env = _server_env(dsn, keys_dir, port=8080)
    sample = asyncio.run(_seed(_settings(env), count, min(MIX_KEYS, count), count >= 100_000))
    print(
        f"PostgreSQL database of {count:,} licenses seeded in "
        f"{time.perf_counter() - started:.1f} s (a throw-away cluster, fsync on)",
        flush=True,
    )
    if redis is None:
        redis = RedisServer(workdir)
        cleanups.append(redis.stop)
    hot_key = sample[0]
    hot_bodies, mix_bodies = workdir / "pg-hot.txt", workdir / "pg-mix.txt"
    hot_bodies.write_text(_body(*hot_key) + "\n")
    mix_bodies.write_text("".join(_body(k, d) + "\n" for k, d in sample))
    spot_checks = random.sample(sample, min(20, len(sample)))
    scenarios = []
    # One instance with in-process rate limits, the same with them in Redis (what every one of
    # several instances pays), and two instances (workers) sharing them through Redis.
    for label, workers, redis_url in pg_setups(redis.url):
        port = _free_port()
        server = Server(
            f"license server on PostgreSQL, {workers} instance(s)",
            [sys.executable, "run.py", "serve"],
            _server_env(
                dsn,
                keys_dir,
                port,
                workers=workers,
                redis_url=redis_url,
                event_loop=args.event_loop,
            ),
            workdir / f"server-pg-{workers}.log",
        )
        servers.append(server)
        url = f"http://127.0.0.1:{port}{VERIFY_PATH}"
        server.wait_until(
            lambda port=port: _http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200
        )
        check_active(url, [hot_key, *spot_checks])
        pid = cluster.process.pid
        scenarios += [
            Scenario(f"{label}, 1 key", url, hot_bodies, server, dsn, [], pid),
            Scenario(f"{label}, {len(sample)} keys", url, mix_bodies, server, dsn, [], pid),
        ]
    return scenarios


def run(args) -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    sys.path.insert(0, str(ROOT))
    cache_dir = None if args.no_cache else args.cache_dir
    servers: list[Server] = []
    cleanups: list = []
    workdir = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    try:
        print(f"preparing a database of {args.licenses:,} licenses ...", flush=True)
        dataset = prepare_dataset(args.licenses, cache_dir, workdir)
        origin = f"reused from {cache_dir}, seeded earlier in" if dataset.cached else "seeded in"
        print(f"database of {args.licenses:,} licenses {origin} {dataset.seed_seconds:.1f} s")

        bare_port, floor_port, verify_port = _free_port(), _free_port(), _free_port()
        bare = Server(
            "bare server",
            [
                *(sys.executable, str(BENCH / "bare_server.py"), "--port", str(bare_port)),
                *("--event-loop", args.event_loop),
            ],
            {**os.environ},
            workdir / "bare.log",
        )
        servers.append(bare)
        # Its database beside the real server's copy: same file system, same fsync cost.
        floor_database = dataset.database.with_name("floor.db")
        floor = Server(
            "floor server",
            [
                *(sys.executable, str(BENCH / "floor_server.py"), "--port", str(floor_port)),
                *("--database", str(floor_database), "--event-loop", args.event_loop),
            ],
            {**os.environ},
            workdir / "floor.log",
        )
        servers.append(floor)
        redis = None
        if args.workers > 1:
            redis = RedisServer(workdir)
            cleanups.append(redis.stop)
        env = _server_env(
            dataset.database,
            dataset.keys_dir,
            verify_port,
            workers=args.workers,
            redis_url=redis.url if redis else None,
            event_loop=args.event_loop,
        )
        server = Server(
            "license server", [sys.executable, "run.py", "serve"], env, workdir / "server.log"
        )
        servers.append(server)
        bare_url = f"http://127.0.0.1:{bare_port}{VERIFY_PATH}"
        floor_url = f"http://127.0.0.1:{floor_port}{VERIFY_PATH}"
        verify_url = f"http://127.0.0.1:{verify_port}{VERIFY_PATH}"
        hot_key = dataset.sample[0]
        bare.wait_until(lambda: _http("POST", bare_url, b"x=1")[0] == 200)
        floor.wait_until(lambda: _http("POST", floor_url, _body(*hot_key).encode())[0] == 200)
        server.wait_until(lambda: _http("GET", f"http://127.0.0.1:{verify_port}/readyz")[0] == 200)
        spot_checks = random.sample(dataset.sample, min(20, len(dataset.sample)))
        check_active(floor_url, [hot_key])
        check_active(verify_url, [hot_key, *spot_checks])

        hot_bodies, mix_bodies = workdir / "hot.txt", workdir / "mix.txt"
        hot_bodies.write_text(_body(*hot_key) + "\n")
        mix_bodies.write_text("".join(_body(k, d) + "\n" for k, d in dataset.sample))
        mix_name = f"verify, {len(dataset.sample)} keys"
        scenarios = [
            Scenario("bare aiohttp", bare_url, hot_bodies, bare, None, []),
            Scenario("floor server", floor_url, hot_bodies, floor, floor_database, []),
            Scenario("verify, 1 key", verify_url, hot_bodies, server, dataset.database, []),
            Scenario(mix_name, verify_url, mix_bodies, server, dataset.database, []),
        ]
        if args.workers > 1:
            # The same server as one process on the same Redis: what N workers cost per check
            # beyond one with the same shared rate-limit store.
            one, one_url = start_beside(
                "license server, 1 worker", env, {"LICENSE_SERVER_WORKERS": "1"}, workdir, servers
            )
            check_active(one_url, [hot_key])
            scenarios.append(Scenario(ONE_WORKER, one_url, hot_bodies, one, dataset.database, []))
            # The N workers again with N times the connections: each worker sees the load
            # the one worker was measured under (what running N costs: report_workers).
            scenarios.append(
                Scenario(
                    f"verify, 1 key, {args.workers}x conns", verify_url, hot_bodies, server,
                    dataset.database, [], connections=args.workers * args.connections,
                )
            )  # fmt: skip
        if args.store == "postgresql":
            scenarios += start_postgres_servers(args, workdir, servers, cleanups, redis)
        if args.detectors_off:
            scenarios += start_switched_off(
                "detectors off", DETECTORS_OFF, dataset, env, workdir, servers
            )
            scenarios[2:4] = [replace(s, name=f"{s.name}, detectors on") for s in scenarios[2:4]]
        if args.defaults_off:
            scenarios += start_switched_off(
                "defaults off", DEFAULTS_OFF, dataset, env, workdir, servers
            )
        print(
            f"wrk: {min(WRK_THREADS, args.connections)} threads, {args.connections} connections, "
            f"{args.duration} s per measurement after {args.warmup} s of warm-up; "
            f"{os.cpu_count()} CPUs; event loop: {_loop_name(args.event_loop)}"
        )
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}")
            for scenario in scenarios:
                scenario.runs.append(measure(scenario, args))
        result_file = cache_dir / f"result-{args.licenses}.json" if cache_dir else None
        report(args, scenarios, result_file)
        if args.store == "postgresql":
            report_stores(args, scenarios)
        if args.detectors_off:
            report_detectors(scenarios)
        if args.defaults_off:
            report_defaults(scenarios)
        if args.workers > 1:
            report_workers(args, scenarios)
    finally:
        # A second Ctrl+C must not leave a server running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            server.stop()
        for cleanup in cleanups:
            cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def start_beside(
    name: str, env: dict[str, str], overrides: dict[str, str], workdir: Path, servers: list
) -> tuple[Server, str]:
    """The server again on a free port, with `overrides` on `env`, ready: it and its URL."""
    port = _free_port()
    server = Server(
        name,
        [sys.executable, "run.py", "serve"],
        {**env, "LICENSE_SERVER_PORT": str(port), **overrides},
        workdir / f"server-{len(servers)}.log",
    )
    servers.append(server)
    server.wait_until(lambda: _http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200)
    return server, f"http://127.0.0.1:{port}{VERIFY_PATH}"


# Settings a vendor may switch off, each on by default, with what switches it off: the anomaly
# detectors (issue #15's budget), and with them the access log (INFO lines) and rate limiting,
# which together are every optional stage of a check (what is left is what every check does).
DETECTORS_OFF = {"LICENSE_SERVER_ANOMALY_ENABLED": "false"}
DEFAULTS_OFF = {
    **DETECTORS_OFF,
    "LICENSE_SERVER_LOG_LEVEL": "WARNING",
    "LICENSE_SERVER_RATE_LIMIT_ENABLED": "false",
}


def start_switched_off(
    label: str, overrides: dict[str, str], dataset, env, workdir, servers
) -> list[Scenario]:
    """The same server on the same database with `overrides`, measured in the same run as
    the server with production defaults: its hot key and mix scenarios, named "..., label"."""
    off, url = start_beside(f"license server, {label}", env, overrides, workdir, servers)
    check_active(url, [dataset.sample[0]])
    hot, mix = workdir / "hot.txt", workdir / "mix.txt"
    return [
        Scenario(f"verify, 1 key, {label}", url, hot, off, dataset.database, []),
        Scenario(
            f"verify, {len(dataset.sample)} keys, {label}", url, mix, off, dataset.database, []
        ),
    ]


def _pair(scenarios: list[Scenario], label: str) -> tuple[Measurement, Measurement]:
    """The summaries of the hot key and mix scenarios named "..., label"."""
    hot, mix = (s for s in scenarios if s.name.endswith(f", {label}"))
    return summary(hot.runs), summary(mix.runs)


def report_detectors(scenarios: list[Scenario]) -> None:
    on_hot, on_mix = (summary(s.runs) for s in scenarios[2:4])
    off_hot, off_mix = _pair(scenarios, "detectors off")
    print("anomaly detectors on ÷ off (issue #15 target: throughput >= 0.90):")
    for name, on, off in (("1 key", on_hot, off_hot), ("mix", on_mix, off_mix)):
        ratio = on.requests_per_s / off.requests_per_s
        cpu = _over(on.cpu_us, off.cpu_us)
        shown = "n/a" if cpu is None else f"{cpu:.2f}"
        print(f"  {name:<6} req/s {ratio:.2f}  CPU/req {shown}  ({_verdict(ratio >= 0.90)})")


def report_defaults(scenarios: list[Scenario]) -> None:
    """What the optional defaults cost, and how far the server is from the floor without
    them: the part of the distance that switching settings off could ever remove."""
    floor = summary(scenarios[1].runs)
    on_hot, on_mix = (summary(s.runs) for s in scenarios[2:4])
    off_hot, off_mix = _pair(scenarios, "defaults off")
    print("access log, rate limits and detectors off (CPU per request):")
    for name, on, off in (("1 key", on_hot, off_hot), ("mix", on_mix, off_mix)):
        cost, to_floor = _over(on.cpu_us, off.cpu_us), _over(off.cpu_us, floor.cpu_us)
        if cost is None or to_floor is None:
            print(f"  {name:<6} n/a (no /proc to read CPU times from)")
            continue
        print(f"  {name:<6} defaults ÷ off {cost:.2f}   off ÷ floor {to_floor:.2f}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Requests/s, latency and CPU per request of POST /api/v1/verify beside a "
        "bare aiohttp handler and the floor server."
    )
    parser.add_argument(
        "--licenses", type=_positive, default=BASE_LICENSES, help="licenses in the database"
    )
    parser.add_argument("--duration", type=_positive, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=_positive, default=32, help="open connections")
    parser.add_argument("--warmup", type=_positive, default=3, help="seconds before each")
    parser.add_argument(
        "--rounds", type=_positive, default=1, help="repeat all four in turn; report medians"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"seeded databases kept per N (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--no-cache", action="store_true", help="seed afresh, keep nothing")
    parser.add_argument(
        "--detectors-off",
        action="store_true",
        help="also measure a second server with the anomaly detectors off (ratio on ÷ off)",
    )
    parser.add_argument(
        "--defaults-off",
        action="store_true",
        help="also measure a server with the access log, rate limiting and the anomaly "
        "detectors off: what they cost, and the distance to the floor without them",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes (workers = N; N > 1 shares rate limits through a local redis)",
    )
    parser.add_argument(
        "--event-loop",
        # license_server.cli.EVENT_LOOPS: the project is imported only once run() has put it
        # on sys.path, after the arguments are parsed.
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop of the server, bare and the floor alike (default: auto, the "
        "server's default: uvloop where installed)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="sqlite: the embedded database only; postgresql: also a throw-away PostgreSQL, "
        "one instance and two (workers = 2 with a local redis), beside the SQLite figures",
    )
    return parser.parse_args(argv)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def run_main(script: str, run_script, args) -> int:
    """A bench script's `run_script(args)` as its exit code: stopped by Ctrl+C even when
    started in the background (which ignores SIGINT) and by `kill`; a BenchError is one line."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        run_script(args)
    except BenchError as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted; servers stopped", file=sys.stderr)
        return 130
    return 0


def main(argv=None) -> int:
    return run_main("bench/verify.py", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

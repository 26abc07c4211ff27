"""Page load times of the staff admin's attempt log with each filter, at 1,000,000 attempts (#12).

Uses bench/verify.py's seeded licenses (10,000, cached) and bench/admin_pages.py's staff session
and timed GETs; adds N attempts straight into the database copy (30 days of them: mostly
active, some refusals, a few rate-limited and malformed; 50,000 source addresses, the licenses'
domains), starts the real server (which applies migration 9's indexes at start) and times
sequential GETs of /admin/attempts with each filter. Prints median and p95 per filter.

    python bench/attempt_pages.py                      # 1,000,000 attempts
    python bench/attempt_pages.py --attempts 10000     # a small log, for the ratio
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import admin_pages as ap
import verify as vb

REQUESTS = 20
DAYS = 30
RESULTS = (  # (result, reason, weight)
    ("active", "ok", 950),
    ("invalid", "domain_not_allowed", 25),
    ("invalid", "unknown_key", 15),
    ("suspended", "banned", 5),
    ("rate_limited", "per-ip", 4),
    ("malformed", "bad_nonce", 1),
)


def seed_attempts(database: Path, count: int, now_ms: int) -> dict[str, object]:
    """Insert `count` attempts, oldest first; returns values the filters then look for."""
    rng = random.Random(12)
    db = sqlite3.connect(database)
    bound = db.execute(
        "SELECT license_id, value FROM license_bindings WHERE kind = 'domain' LIMIT 10000"
    ).fetchall()
    ips = [f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}" for n in range(50_000)]
    outcomes = [(r, why) for r, why, weight in RESULTS for _ in range(weight)]
    start = now_ms - DAYS * 86_400_000
    step = DAYS * 86_400_000 // count
    columns = (
        "at_ms, endpoint, source_ip, reported_ip, domain_raw, domain, directory, license_id,"
        " key_hash, product, result, reason, client_version, user_agent, latency_us"
    )
    sql = f"INSERT INTO verification_attempts ({columns}) VALUES ({', '.join('?' * 15)})"  # nosec B608

    def rows():
        for n in range(count):
            license_id, domain = bound[rng.randrange(len(bound))]
            result, reason = outcomes[rng.randrange(len(outcomes))]
            known = reason != "unknown_key"
            yield (start + n * step, "native", ips[rng.randrange(len(ips))], "", domain, domain,
                   "/var/www", license_id if known else None, None if known else b"k" * 32,
                   vb.PRODUCT_CODE, result, reason, "2.1.0", "WHMCS/8.10", 800)  # fmt: skip

    db.executemany(sql, rows())
    db.commit()
    sample_domain = db.execute(
        "SELECT domain FROM verification_attempts ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    sample_license = db.execute(
        "SELECT license_id FROM verification_attempts WHERE license_id IS NOT NULL LIMIT 1"
    ).fetchone()[0]
    middle = db.execute(
        "SELECT id FROM verification_attempts ORDER BY id LIMIT 1 OFFSET ?", (count // 2,)
    ).fetchone()[0]
    db.close()
    return {"domain": sample_domain, "license": sample_license, "middle": middle,
            "ip": ips[7]}  # fmt: skip


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def measure(attempts: int, cache_dir: Path) -> dict[str, tuple[float, float, int]]:
    workdir = Path(tempfile.mkdtemp(prefix="attempt-pages-bench-"))
    dataset = vb.prepare_dataset(10_000, cache_dir, workdir)
    now_ms = int(time.time() * 1000)
    started = time.monotonic()
    found = seed_attempts(dataset.database, attempts, now_ms)
    print(f"  seeded {attempts:,} attempts in {time.monotonic() - started:.0f} s", flush=True)
    env = vb._server_env(dataset.database, dataset.keys_dir, port=ap.PORT)
    cookie = asyncio.run(ap._staff_session(vb._settings(env)))
    server = vb.Server("license server", [sys.executable, "run.py", "serve"], env,
                       workdir / "server.log")  # fmt: skip
    two_weeks = now_ms - 14 * 86_400_000
    pages = {
        "no filter": "",
        "deep page (before=)": f"before={found['middle']}",
        "result=invalid": "result=invalid",
        "result=rate_limited": "result=rate_limited",
        "result=malformed": "result=malformed",
        "reason=unknown_key": "reason=unknown_key",
        "reason=bad_nonce": "reason=bad_nonce",
        "product": f"product={vb.PRODUCT_CODE}",
        "ip exact": f"ip={found['ip']}",
        "ip /24": "ip=10.0.7.0/24",
        "ip /16": "ip=10.0.0.0/16",
        "domain": f"domain={found['domain']}",
        "license": f"license={found['license']}",
        "time: 1 hour, 2 weeks ago": (
            f"from={_minute(two_weeks)}&to={_minute(two_weeks + 3_540_000)}"
        ),
        "time: to 2 weeks ago": f"to={_minute(two_weeks)}",
        "domain + invalid": f"domain={found['domain']}&result=invalid",
        "ip /16 + malformed": "ip=10.0.0.0/16&result=malformed",
    }
    try:
        started = time.monotonic()
        server.wait_until(
            lambda: vb._http("GET", f"http://127.0.0.1:{ap.PORT}/readyz")[0] == 200, timeout=600
        )
        print(f"  server ready (migrations included) in {time.monotonic() - started:.0f} s")
        results = {}
        for name, query in pages.items():
            times = []
            rows = 0
            for _ in range(REQUESTS):
                status, ms = ap._timed_get(f"/admin/attempts?{query}", cookie)
                if status != 200:
                    raise vb.BenchError(f"{query} answered {status}\n{server.log_tail()}")
                times.append(ms)
            rows = _rows(f"/admin/attempts?{query}", cookie)
            times.sort()
            results[name] = (statistics.median(times), times[int(len(times) * 0.95) - 1], rows)
        return results
    finally:
        server.stop()


def _rows(path: str, cookie: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", ap.PORT, timeout=60)
    conn.request("GET", path, headers={"Cookie": f"__Host-staff-session={cookie}"})
    body = conn.getresponse().read().decode()
    conn.close()
    return body.count("<tr>") - 1  # the header row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--cache-dir", type=Path, default=vb.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    print(f"{args.attempts:,} attempts ...", flush=True)
    measured = measure(args.attempts, args.cache_dir)
    print(f"\n/admin/attempts at {args.attempts:,} attempts, one client, {REQUESTS} requests"
          " each: median / p95 (ms), rows on the page")  # fmt: skip
    for name, (median, p95, rows) in measured.items():
        print(f"  {name:<28}{median:>9.1f} / {p95:>7.1f}   {rows:>3} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Page load times of the staff admin's pages and the vendor API's license list at 10,000 and
1,000,000 licenses (#12, #13).

Uses bench/verify.py's seeded datasets (cached by size) and its server runner; adds a staff
session straight into the database (the sign-in is not what is measured), starts the real
server and times sequential GETs from one client: the list's first page, a page far down the
keyset, a status, product and expiry filter, a search by key, domain, e-mail and name, and a
license's page. Prints median
and 95th percentile per page and the ratio of the large dataset to the small.

With `--attempts N` (default 1,000,000) the run's copy of the database also gets N
verification attempts spread over the last 30 days (a tenth refused, five client versions,
on 1,000 of the licenses), the closed hours folded as the maintenance process does, and a
second signing key activated, so that the first (which signed every license) is an old key
whose client versions the keys page looks up: it times the dashboard and the keys page too.

    python bench/admin_pages.py                       # 10,000 and 1,000,000 licenses
    python bench/admin_pages.py --licenses 10000      # one size
    python bench/admin_pages.py --attempts 0          # the license pages only
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import verify as vb

REQUESTS = 20
PORT = 18091


async def _api_key(settings) -> str:
    from license_server.licensing.actors import CLI
    from license_server.runtime import open_runtime
    from license_server.staff.api_keys import ApiKeys, NewApiKey

    async with open_runtime(settings) as runtime:
        new = NewApiKey(name="bench", scopes=("license:read",), expires=None)
        _, secret = await ApiKeys(runtime.licenses).create(CLI, new)
    return secret


async def _staff_session(settings) -> str:
    from license_server.db import staff as staff_rows
    from license_server.runtime import open_runtime
    from license_server.staff import sessions

    session_id = sessions.new_session_id()
    async with open_runtime(settings) as runtime:
        async with runtime.db.write() as conn:
            account = await staff_rows.insert_account(
                conn, email=f"bench-{session_id[:8]}@example.org", name="Bench",
                role="read_only", password_hash="unused", now=runtime.licenses.now(),
            )  # fmt: skip
            await staff_rows.set_totp(conn, account, b"enrolled", runtime.licenses.now())
            await staff_rows.insert_session(
                conn, session_key=sessions.session_key(session_id), account_id=account,
                csrf_token="bench", mfa_passed=True, now=runtime.licenses.now(),
            )  # fmt: skip
    return session_id


ATTEMPT_DAYS = 30


def _add_attempts(database: Path, count: int, now: int) -> None:
    """`count` attempts into the SQLite file, through the project's own INSERT."""
    import random
    import sqlite3

    from license_server.db.attempts import INSERT

    rng = random.Random(12)  # nosec B311 (test data)
    conn = sqlite3.connect(database)
    ids = [row[0] for row in conn.execute("SELECT id FROM licenses LIMIT 1000")]
    versions = ("1.0.0", "1.1.0", "2.0.0", "2.0.1", "")
    reasons = (("invalid", "unknown_key"), ("invalid", "domain_not_allowed"),
               ("suspended", "suspended"), ("rate_limited", "rate_limited"))  # fmt: skip
    start_ms = (now - ATTEMPT_DAYS * 86400) * 1000
    span = ATTEMPT_DAYS * 86400 * 1000
    batch = []
    for n in range(count):
        result, reason = rng.choice(reasons) if n % 10 == 0 else ("active", "ok")
        batch.append((start_ms + rng.randrange(span), "native", "192.0.2.1", "", "", "",
                      "", rng.choice(ids), None, "mymod", result, reason,
                      versions[n % len(versions)], "bench", 500))  # fmt: skip
        if len(batch) == 50_000:
            conn.executemany(INSERT, batch)
            batch.clear()
    conn.executemany(INSERT, batch)
    conn.commit()
    conn.close()


async def _fold_and_rotate(settings, now: int) -> None:
    """What the maintenance process would have done; and an old key with licenses."""
    from license_server.crypto.keystore import KeyStore
    from license_server.licensing.actors import CLI
    from license_server.licensing.attempt_hours import fold_closed_hours
    from license_server.licensing.signing_keys import SigningKeys
    from license_server.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        await fold_closed_hours(runtime.db, now)
        async with runtime.db.write() as conn:  # seeded without it: as if recorded at issue
            await conn.execute(
                "UPDATE licenses SET signing_kid = ? WHERE signing_kid IS NULL",
                (runtime.keyring.active.kid,),
            )
        keys = SigningKeys(runtime.licenses, KeyStore(settings.keys_dir), runtime.keyring)
        new = await keys.add(CLI)
        await keys.activate(new.kid, CLI)


def _timed_get(path: str, cookie: str, api_key: str = "") -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    started = time.perf_counter()
    headers = (
        {"Authorization": f"Bearer {api_key}"}
        if path.startswith("/api/")
        else {"Cookie": f"__Host-staff-session={cookie}"}
    )
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    return response.status, elapsed


def measure(count: int, cache_dir: Path, attempts: int) -> dict[str, tuple[float, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="admin-pages-bench-"))
    dataset = vb.prepare_dataset(count, cache_dir, workdir)
    env = vb._server_env(dataset.database, dataset.keys_dir, port=PORT)
    if attempts:
        now = int(time.time())
        started = time.perf_counter()
        _add_attempts(dataset.database, attempts, now)
        asyncio.run(_fold_and_rotate(vb._settings(env), now))
        print(f"  {attempts:,} attempts added and folded in {time.perf_counter() - started:.0f} s")
    cookie = asyncio.run(_staff_session(vb._settings(env)))
    api_key = asyncio.run(_api_key(vb._settings(env)))
    server = vb.Server("license server", [sys.executable, "run.py", "serve"], env,
                       workdir / "server.log")  # fmt: skip
    try:
        server.wait_until(lambda: vb._http("GET", f"http://127.0.0.1:{PORT}/readyz")[0] == 200)
        key, domain = dataset.sample[0]
        status, _ = _timed_get("/admin/licenses", cookie)
        if status != 200:
            raise vb.BenchError(f"/admin/licenses answered {status}\n{server.log_tail()}")
        license_id = _first_id(cookie)
        # The seeded expiries spread over 30..1095 days: 40 days selects ~1 %, 1000 ~9 %.
        soon = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 40 * 86_400))
        late = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 1000 * 86_400))
        pages = {
            "list, first page": "/admin/licenses",
            "list, deep page": f"/admin/licenses?before={license_id // 2}",
            "list, status=active": "/admin/licenses?status=active",
            "search by key": f"/admin/licenses?q={key}",
            "search by domain": f"/admin/licenses?q={domain}",
            "search by e-mail": f"/admin/licenses?q=billing%40{domain}",
            # The bench's names are "Customer <n>": one that many share, one that none has
            # (the worst case of a substring search: every row read).
            "name, many match": "/admin/licenses?by=name&q=customer+1",
            "name, no match": "/admin/licenses?by=name&q=nobody",
            "product filter": "/admin/licenses?product=bench",
            "expires before": f"/admin/licenses?expires_to={soon}",
            "expires after": f"/admin/licenses?expires_from={late}",
            "expiry + status": f"/admin/licenses?expires_to={soon}&status=active",
            "a license": f"/admin/licenses/{license_id}",
            # The vendor API's list (issue #13): 100 a page by keyset, an opaque cursor.
            "API list": "/api/v1/licenses?limit=100",
            "API list, status": "/api/v1/licenses?limit=100&status=active",
            "API list, product": "/api/v1/licenses?limit=100&product=bench",
            "API license": f"/api/v1/licenses/{license_id}",
        }
        if attempts:
            pages["dashboard"] = "/admin"
            pages["signing keys"] = "/admin/keys"
        results = {}
        for name, path in pages.items():
            times = []
            for _ in range(REQUESTS):
                status, ms = _timed_get(path, cookie, api_key)
                if status != 200:
                    raise vb.BenchError(f"{path} answered {status}")
                times.append(ms)
            times.sort()
            results[name] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
        return results
    finally:
        server.stop()


def _first_id(cookie: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    conn.request("GET", "/admin/licenses", headers={"Cookie": f"__Host-staff-session={cookie}"})
    body = conn.getresponse().read().decode()
    conn.close()
    marker = 'href="/admin/licenses/'
    return int(body.split(marker, 1)[1].split('"', 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", default="10000,1000000")
    parser.add_argument("--cache-dir", type=Path, default=vb.DEFAULT_CACHE)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.licenses.split(",")]
    measured = {}
    for count in counts:
        print(f"{count:,} licenses ...", flush=True)
        measured[count] = measure(count, args.cache_dir, args.attempts)
    print(f"\nadmin page load, one client, {REQUESTS} requests each: median / p95 (ms)")
    header = "".join(f"{count:>22,}" for count in counts)
    print(f"{'page':<22}{header}" + ("   ratio of medians" if len(counts) > 1 else ""))
    for name in measured[counts[0]]:
        cells = "".join(
            f"{measured[c][name][0]:>12.1f} / {measured[c][name][1]:>6.1f}" for c in counts
        )
        ratio = (
            f"   {measured[counts[-1]][name][0] / measured[counts[0]][name][0]:.2f}"
            if len(counts) > 1
            else ""
        )
        print(f"{name:<22}{cells}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

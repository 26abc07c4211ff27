"""Several instances on one PostgreSQL and one Redis (issue #17).

Two real server processes (`run.py serve`, each on its own port) share a key directory, a
PostgreSQL database and a Redis, as two hosts behind a load balancer would. What one instance
(or the CLI, a third process) does must hold for the other:

* a per-IP rate limit is one budget across both (its counters live in Redis);
* a license suspended elsewhere is refused by an instance that had it cached, on the next check
  (the change log: on PostgreSQL every check reads the newest change seq);
* concurrent first checks of a one-seat license, spread over both, bind exactly one domain
  (the seat check runs on the license's row locked inside the write transaction);
* a signing key rotated and activated through the CLI signs a license that both verify;
* a ban and a product's new seat count, set through the CLI, hold on both at the next check.

These tests always run on PostgreSQL, whatever `--store` says: several instances need it.
Every wait is bounded; nothing here depends on timing for its verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from license_server.client import public_keys_from_jwks, verify_answer
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.server_process import ROOT, ServerProcess, query
from tests.verify_helpers import nonce

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REQUEST_TIMEOUT = 20  # seconds; only reached if a server stops answering


# --- set-up ------------------------------------------------------------------------------


@pytest.fixture
def shared_database(postgres_cluster) -> Iterator[str]:
    """A fresh PostgreSQL database for both instances (whatever `--store` is)."""
    dsn = postgres_cluster.create_database()
    try:
        yield dsn
    finally:
        postgres_cluster.drop_database(postgres_cluster.database_of(dsn))


def base_env(dsn: str, keys_dir: Path, redis_port: int) -> dict[str, str]:
    return {
        "LICENSE_SERVER_DATABASE": dsn,
        "LICENSE_SERVER_KEYS_DIR": str(keys_dir),
        "LICENSE_SERVER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LICENSE_SERVER_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def two_instances(
    dsn: str, keys_dir: Path, tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on the same database, keys and Redis, started together, stopped after."""
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            workdir = tmp_path / f"instance-{name}"
            workdir.mkdir()
            server = ServerProcess(dsn, keys_dir, workdir, env)
            server.start()
            stack.callback(lambda server=server: server.running and server.stop())
            servers.append(server)
        for server in servers:  # both started before either is waited for: they migrate together
            server.wait_ready()
        yield servers[0], servers[1]
        for server in servers:
            if server.running:  # not one a test killed
                assert server.stop() == 0, server.log()


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """`run.py ARGS` with the instances' settings; its stdout (it must succeed)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,  # not the repository: its settings.toml is not read
        env={**os.environ, **env},
        timeout=60,
    )
    assert result.returncode == 0, f"run.py {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def prepare(dsn: str, keys_dir: Path, product: ProductSpec, count: int) -> list[tuple[int, str]]:
    """A product and `count` licenses of it, issued in-process: (license id, key) pairs."""

    async def run() -> list[tuple[int, str]]:
        settings = Settings(database=dsn, keys_dir=keys_dir)
        async with asyncio.timeout(60), open_runtime(settings) as runtime:
            await runtime.licenses.create_product(product)
            issued = []
            for n in range(count):
                license, key = await runtime.licenses.issue(
                    LicenseSpec(product=product.code, licensee=f"L{n}", email=f"l{n}@example.org")
                )
                issued.append((license.id, key))
            return issued

    return asyncio.run(run())


def post_verify(server: ServerProcess, key: str, domain: str) -> tuple[int, bytes, str | None, str]:
    """POST /api/v1/verify (JSON): status, body, License-Signature header, the nonce sent."""
    sent = nonce()
    body = json.dumps({"license_key": key, "domain": domain, "nonce": sent}).encode()
    request = urllib.request.Request(
        f"{server.url}/api/v1/verify", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read(), response.headers["License-Signature"], sent
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers.get("License-Signature"), sent


def jwks(server: ServerProcess) -> dict:
    return json.loads(server.get("/.well-known/jwks.json"))


def checked(server: ServerProcess, key: str, domain: str) -> dict:
    """A check whose answer must be 200 and verify against the server's published keys."""
    status, body, signature, sent = post_verify(server, key, domain)
    assert status == 200, (status, body[:300], server.log())
    published = public_keys_from_jwks(jwks(server))
    return verify_answer(body, signature, published, nonce=sent, now=time.time())


def wait_for(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {timeout} s: {what}")
        time.sleep(0.05)  # bounded poll of a background pickup


# --- the tests ---------------------------------------------------------------------------


def test_a_per_ip_rate_limit_holds_across_instances(tmp_path, shared_database, redis_port):
    keys_dir = tmp_path / "keys"
    [(_, key)] = prepare(shared_database, keys_dir, ProductSpec(code="rl", name="RL", seats=5), 1)
    env = {
        **base_env(shared_database, keys_dir, redis_port),
        "LICENSE_SERVER_RATE_LIMIT_ENABLED": "true",
        "LICENSE_SERVER_RATE_LIMIT_PER_IP": "4/minute",
    }
    with two_instances(shared_database, keys_dir, tmp_path, env) as (a, b):
        statuses = [post_verify(server, key, "shop.example.com")[0] for server in (a, b, a, b, a)]
        # Each instance saw at most 3 requests: only a shared budget refuses the 5th.
        assert statuses == [200, 200, 200, 200, 429], (statuses, a.log(), b.log())
        assert post_verify(b, key, "shop.example.com")[0] == 429  # and on the other one too


def test_a_suspension_through_the_cli_is_seen_by_both_instances(
    tmp_path, shared_database, redis_port
):
    keys_dir = tmp_path / "keys"
    spec = ProductSpec(code="susp", name="Suspend", seats=1)
    [(license_id, key)] = prepare(shared_database, keys_dir, spec, 1)
    env = base_env(shared_database, keys_dir, redis_port)
    with two_instances(shared_database, keys_dir, tmp_path, env) as (a, b):
        # Both have the license cached (the first check binds it, the second is served bound).
        assert checked(a, key, "shop.example.com")["status"] == "active"
        assert checked(b, key, "shop.example.com")["status"] == "active"
        assert checked(b, key, "shop.example.com")["status"] == "active"

        cli(env, tmp_path, "suspend", key)  # a third process, through the database only

        # The very next check on each instance refuses it: no wait, no poll.
        for server in (b, a):
            answer = checked(server, key, "shop.example.com")
            assert answer["status"] == "suspended", (answer, server.log())
    status = query(shared_database, "SELECT status FROM licenses WHERE id = ?", (license_id,))
    assert status == [("suspended",)]


def test_concurrent_first_checks_over_two_instances_take_one_seat(
    tmp_path, shared_database, redis_port
):
    keys_dir = tmp_path / "keys"
    spec = ProductSpec(code="seat", name="One seat", seats=1)
    [(license_id, key)] = prepare(shared_database, keys_dir, spec, 1)
    env = base_env(shared_database, keys_dir, redis_port)  # rate limiting off: one client IP
    checks = 50
    domains = [f"site-{n:02d}.example.com" for n in range(checks)]
    with two_instances(shared_database, keys_dir, tmp_path, env) as (a, b):
        start = threading.Barrier(checks, timeout=30)

        def first_check(n: int) -> tuple[str, int, dict | bytes]:
            server = (a, b)[n % 2]
            start.wait()  # all 50 are sent together
            status, body, _, _ = post_verify(server, key, domains[n])
            return domains[n], status, json.loads(body) if status == 200 else body[:300]

        with ThreadPoolExecutor(max_workers=checks) as pool:
            answers = list(pool.map(first_check, range(checks)))
        logs = a.log() + b.log()

    failed = [(domain, status, body) for domain, status, body in answers if status != 200]
    assert not failed, (failed[:5], logs)
    active = [domain for domain, _, body in answers if body["status"] == "active"]
    assert len(active) == 1, (active, logs)
    refused = Counter(
        (body["status"], body["reason"]) for domain, _, body in answers if domain not in active
    )
    assert refused == {("invalid", "seat_limit"): checks - 1}, refused
    bound = query(
        shared_database,
        "SELECT value FROM license_bindings WHERE license_id = ? AND kind = 'domain'",
        (license_id,),
    )
    assert bound == [(active[0],)]


def test_a_key_rotated_through_the_cli_signs_licenses_both_instances_verify(
    tmp_path, shared_database, redis_port
):
    keys_dir = tmp_path / "keys"
    spec = ProductSpec(code="rot", name="Rotate", seats=5)
    [(_, old_key)] = prepare(shared_database, keys_dir, spec, 1)
    env = base_env(shared_database, keys_dir, redis_port)
    with two_instances(shared_database, keys_dir, tmp_path, env) as (a, b):
        (old_kid,) = {entry["kid"] for entry in jwks(a)["keys"]}

        new_kid = cli(env, tmp_path, "rotate-keys").split()[3].rstrip(";")
        assert new_kid != old_kid
        cli(env, tmp_path, "rotate-keys", "--activate", new_kid)
        issued = cli(env, tmp_path, "issue", "--product", "rot", "--licensee", "New",
                     "--email", "new@example.org").splitlines()[-1]  # fmt: skip
        signer = query(
            shared_database, "SELECT signing_kid FROM licenses WHERE licensee_name = 'New'"
        )
        assert signer == [(new_kid,)]

        # At once, without a poll: each instance verifies the new key's license (re-reading
        # its keys on meeting an unknown signer), and its answer verifies against its JWKS.
        for server in (a, b):
            answer = checked(server, issued, "new.example.com")
            assert answer["status"] == "active", (answer, server.log())
        # Within the keyring's reload, both publish and sign with the new key.
        for server in (a, b):
            wait_for(
                lambda server=server: (
                    'keyid="' + new_kid + '"' in post_verify(server, issued, "new.example.com")[2]
                ),
                f"{server.url} signing with the activated key",
            )
            assert {entry["kid"] for entry in jwks(server)["keys"]} == {old_kid, new_kid}
            # The old key's license still verifies.
            assert checked(server, old_key, "old.example.com")["status"] == "active"


def test_a_ban_and_a_product_change_through_the_cli_reach_both_instances(
    tmp_path, shared_database, redis_port
):
    keys_dir = tmp_path / "keys"
    spec = ProductSpec(code="more", name="More", seats=1)
    [(license_id, key), (_, other)] = prepare(shared_database, keys_dir, spec, 2)
    env = base_env(shared_database, keys_dir, redis_port)
    with two_instances(shared_database, keys_dir, tmp_path, env) as (a, b):
        # Cached on both: one bound site, and a second domain refused for want of a seat.
        assert checked(a, key, "one.example.com")["status"] == "active"
        for server in (a, b):
            answer = checked(server, key, "two.example.com")
            assert (answer["status"], answer["reason"]) == ("invalid", "seat_limit"), answer
            assert checked(server, other, "banned.example.com")["status"] == "active"

        cli(env, tmp_path, "update-product", "--code", "more", "--seats", "2")
        cli(env, tmp_path, "ban", "domain", "banned.example.com", "--reason", "abuse")

        # The next check on the other instance binds the second seat ...
        assert checked(b, key, "two.example.com")["status"] == "active"
        # ... and both refuse the banned domain.
        for server in (a, b):
            assert checked(server, other, "banned.example.com")["status"] == "suspended"
    bound = query(
        shared_database,
        "SELECT value FROM license_bindings WHERE license_id = ? AND kind = 'domain' "
        "ORDER BY value",
        (license_id,),
    )
    assert bound == [("one.example.com",), ("two.example.com",)]

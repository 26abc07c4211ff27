"""Crash test: `kill -9` under load loses no acknowledged verification attempt.

What it proves: a real server process (`run.py serve`) answers a stream of concurrent
`POST /api/v1/verify` requests (genuine keys, a revoked key, unknown keys, malformed requests)
and is then killed with SIGKILL while requests are still in flight. After a restart, every
request whose answer the load generator fully received is in `verification_attempts`, with the
result the client was told, and the database passes `PRAGMA integrity_check`. Requests cut off
by the kill were never acknowledged: they may or may not be in the database.

Why it holds: the attempt log uses group commit and `append` returns only after the batch that
holds the attempt has committed; the handler builds its answer only after that (see
`licensing/attempt_log.py` and `web/verify.py`). The writer runs in WAL mode with
`synchronous=FULL`: when COMMIT returns, the transaction's frames and commit record are written
(and fsynced) to the -wal file, and the next open recovers the WAL. A killed process therefore
loses at most attempts whose answers were never sent. (A SIGKILL leaves the OS page cache
intact, so this test shows crash safety of the process; the fsync of `synchronous=FULL` is what
extends it to power loss, which a test cannot simulate.)

Nothing here depends on timing for its verdict: the kill happens after a counted number of
answers, each request carries a unique `client_version` (stored for decided and malformed
requests alike), and the check compares exact sets. Waits are bounded only so that a broken
server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.server_process import ServerProcess
from tests.store_helpers import query

WORKERS = 16
KILL_AFTER = 400  # acknowledged answers before the SIGKILL
LOAD_TIMEOUT = 60  # seconds; only reached if the server stops answering
REQUEST_TIMEOUT = 10


# --- set-up ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    valid: list[tuple[str, str]]  # (key, domain it is used from)
    revoked: str


async def _prepare(settings: Settings) -> Keys:
    async with asyncio.timeout(30), open_runtime(settings) as runtime:
        await runtime.licenses.create_product(ProductSpec(code="crash", name="Crash"))
        valid = []
        for name in "ABC":
            _, key = await runtime.licenses.issue(
                LicenseSpec(product="crash", licensee=name, email=f"{name.lower()}@example.org")
            )
            valid.append((key, f"{name.lower()}.crash-test.com"))
        revoked_license, revoked = await runtime.licenses.issue(
            LicenseSpec(product="crash", licensee="R", email="r@example.org")
        )
        await runtime.licenses.apply(revoked_license.id, Action.REVOKE)
    return Keys(valid, revoked)


# --- load --------------------------------------------------------------------------------


@dataclass
class Load:
    """What the load generator sent and what it got back."""

    keys: Keys
    server: ServerProcess
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    acknowledged: dict[str, str] = field(default_factory=dict)  # client_version -> result
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)  # for failure messages
    sent: dict[str, str] = field(default_factory=dict)  # client_version -> kind
    wrong: list[str] = field(default_factory=list)  # answers not matching the request kind
    cut_off: list[str] = field(default_factory=list)  # no complete answer (after the kill)
    in_flight: int = 0
    in_flight_at_kill: int = -1
    killed: bool = False
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    # Several workers: what to kill (default the server), and how many more answers the
    # others must give after the kill before the load stops (0: stop at the kill).
    kill: Callable[[], None] | None = None
    after_kill: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stopped(self) -> bool:
        return self.killed and (self.after_kill == 0 or self.finished.is_set())

    def next_request(self) -> tuple[str, str, dict[str, str]]:
        n = next(self.counter)
        version = f"crash-{n:07d}"
        slot = n % 10
        nonce = secrets.token_urlsafe(24)
        if slot < 6:
            key, domain = self.keys.valid[n % len(self.keys.valid)]
            kind = "active"
        elif slot == 6:
            key, domain, kind = self.keys.revoked, "r.crash-test.com", "revoked"
        elif slot < 9:
            key, domain, kind = f"CRASH-{secrets.token_hex(20)}", "x.crash-test.com", "invalid"
        else:
            key, domain, kind = self.keys.valid[0][0], "a.crash-test.com", "malformed"
        form = {"license_key": key, "domain": domain, "client_version": version, "nonce": nonce}
        if kind == "malformed":
            del form["nonce"]  # -> 400, still logged with its client_version
        return version, kind, form

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while not self.stopped:
            version, kind, form = self.next_request()
            self.sent[version] = kind
            self.in_flight += 1
            try:
                async with session.post(f"{self.server.url}/api/v1/verify", data=form) as resp:
                    status = resp.status
                    body = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                if not self.killed:
                    raise
                self.cut_off.append(version)
                if self.after_kill == 0:
                    return
                continue  # a connection to the killed worker; the others still answer
            finally:
                self.in_flight -= 1
            # Status and whole body received: the server acknowledged this attempt.
            if status == 200:
                result = json.loads(body)["status"]
            elif status == 400:
                result = "malformed"
            else:
                result = f"http {status}"
            self.acknowledged[version] = result
            self.answers[version] = (status, body[:300].decode(errors="replace"))
            if result != kind:
                self.wrong.append(f"{version}: sent {kind}, got {status} {body[:300]!r}")
            if len(self.acknowledged) >= KILL_AFTER:
                self.enough.set()
            if len(self.acknowledged) >= KILL_AFTER + self.after_kill and self.killed:
                self.finished.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=WORKERS)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks = [asyncio.create_task(self.worker(session)) for _ in range(WORKERS)]
            try:
                async with asyncio.timeout(LOAD_TIMEOUT):
                    done, _ = await asyncio.wait(
                        [asyncio.create_task(self.enough.wait()), *tasks],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for task in done:
                        task.result()  # a worker that failed before the kill fails the test
                    assert self.enough.is_set(), "workers stopped before enough answers"
                    # Kill while the workers keep sending: every worker is mid-request now.
                    self.in_flight_at_kill = self.in_flight
                    self.killed = True
                    (self.kill or self.server.kill)()
                    await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


# --- the test ----------------------------------------------------------------------------


def test_sigkill_under_load_loses_no_acknowledged_attempt(tmp_path, database_url):
    database = database_url
    keys_dir = tmp_path / "keys"
    keys = asyncio.run(_prepare(Settings(database=database, keys_dir=keys_dir)))

    env = {"LICENSE_SERVER_LOG_LEVEL": "WARNING"}
    with ServerProcess(database, keys_dir, tmp_path, env) as server:
        load = Load(keys, server)
        asyncio.run(load.run())
        assert server.wait() == -signal.SIGKILL, server.log()

        # Restart on the crashed database (WAL recovery), then stop cleanly.
        server.start()
        server.wait_ready()
        assert server.stop() == 0, server.log()

    assert_nothing_lost(database, load)


def assert_nothing_lost(database, load: Load) -> None:
    """Every acknowledged attempt is stored once with the result the client was told."""
    assert load.in_flight_at_kill > 0  # the kill did hit requests in progress
    assert not load.wrong, "\n".join(load.wrong[:20])
    assert len(load.acknowledged) >= KILL_AFTER

    if not str(database).startswith("postgresql://"):  # SQLite: the file survived intact
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    results, rows = stored_as_answered(database, load)
    cut_off_stored = sum(version in results for version in load.cut_off)
    print(
        f"\ncrash test: {len(load.acknowledged)} acknowledged, all stored; "
        f"{load.in_flight_at_kill} in flight at the kill, {len(load.cut_off)} cut off "
        f"({cut_off_stored} of them stored anyway); {rows} rows in all"
    )


def stored_as_answered(database, load: Load) -> tuple[dict[str, str], int]:
    """Every acknowledged attempt stored once, with the result the client was told, and nothing
    that was never sent; (version -> stored result, rows in all)."""
    rows = query(
        database,
        "SELECT client_version, result FROM verification_attempts "
        "WHERE client_version LIKE 'crash-%'",
    )

    stored = Counter(version for version, _ in rows)
    results = dict(rows)
    missing = [
        f"{version}: answered {load.answers[version]}, not in the database"
        for version in sorted(load.acknowledged)
        if version not in results
    ]
    assert not missing, f"{len(missing)} acknowledged attempts lost:\n" + "\n".join(missing[:20])
    mismatched = [
        f"{version}: client got {result!r}, database has {results[version]!r}"
        for version, result in sorted(load.acknowledged.items())
        if results[version] != result
    ]
    assert not mismatched, "\n".join(mismatched[:20])
    duplicated = [version for version, count in stored.items() if count > 1]
    assert not duplicated, f"attempts recorded more than once: {duplicated[:20]}"
    assert set(results) <= set(load.sent)
    return results, len(rows)

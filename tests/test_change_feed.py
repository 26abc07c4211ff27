"""Changes made by any process are answered on the next check; the license cache stays in use.

Two runtimes on one database stand for the server and `run.py` (issue #11, item 4); the last
test runs the real server as a child process and changes licenses with `run.py` commands.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from license_server.client import LicenseClient
from license_server.db import bans as ban_rows
from license_server.db import changes as change_rows
from license_server.licensing.actors import CLI
from license_server.licensing.changes import ChangeKind, Coalesced
from license_server.licensing.decision import Facts
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import ProductChanges
from license_server.licensing.verifier import RawBinding
from license_server.runtime import open_runtime
from tests.server_process import ROOT, ServerProcess
from tests.verify_helpers import issue, product, public_keys


@pytest.fixture
async def server_and_cli(settings):
    """The server's runtime and a second one on the same files, acting as `run.py`."""
    async with open_runtime(settings) as server, open_runtime(settings) as cli:
        await product(cli, seats=1)
        yield server, cli


async def check(runtime, key: str, domain: str = "shop.com", ip: str = "203.0.113.5"):
    facts = Facts(domain=domain, ip=ip, directory="", product="")
    outcome = await runtime.verifier.check(key, facts, RawBinding(domain, ip, ""))
    return outcome.verdict.answer.value, outcome.verdict.reason


class LicenseReads:
    """Counts license reads from the database (the real read runs)."""

    def __init__(self, runtime, monkeypatch) -> None:
        self.count = 0
        real = runtime.licenses.license_by_lookup

        async def counting(lookup):
            self.count += 1
            return await real(lookup)

        monkeypatch.setattr(runtime.licenses, "license_by_lookup", counting)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (Action.REVOKE, ("revoked", "revoked")),
        (Action.SUSPEND, ("suspended", "suspended")),
        (Action.EXPIRE, ("expired", "expired")),
    ],
)
async def test_a_status_change_by_another_process_is_answered_on_the_next_check(
    server_and_cli, action, expected
):
    server, cli = server_and_cli
    license, key = await issue(cli)
    assert await check(server, key) == ("active", "activated")
    assert await check(server, key) == ("active", "ok")  # now cached in the server
    await cli.licenses.apply(license.id, action, actor=CLI)
    assert await check(server, key) == expected


async def test_a_reissue_by_another_process_frees_the_seat_at_once(server_and_cli):
    server, cli = server_and_cli
    license, key = await issue(cli)
    assert await check(server, key, "old.com") == ("active", "activated")
    assert await check(server, key, "new.com") == ("invalid", "seat_limit")
    await cli.licenses.apply(license.id, Action.REISSUE, actor=CLI)
    assert await check(server, key, "new.com") == ("active", "activated")


async def test_a_ban_and_unban_by_another_process_is_answered_on_the_next_check(server_and_cli):
    server, cli = server_and_cli
    _, key = await issue(cli)
    assert await check(server, key, "pirate.net") == ("active", "activated")
    await cli.bans.ban("domain", "pirate.net")
    assert await check(server, key, "pirate.net") == ("suspended", "banned")
    await cli.bans.unban("domain", "pirate.net")
    assert await check(server, key, "pirate.net") == ("active", "ok")


async def test_a_product_change_by_another_process_reaches_cached_licenses(server_and_cli):
    server, cli = server_and_cli
    _, key = await issue(cli)
    await check(server, key, "one.com")
    assert await check(server, key, "two.com") == ("invalid", "seat_limit")
    await cli.licenses.update_product("mymod", ProductChanges(seats=2), actor=CLI)
    assert await check(server, key, "two.com") == ("active", "activated")


async def test_unchanged_licenses_are_served_from_the_cache(server_and_cli, monkeypatch):
    server, cli = server_and_cli
    _, kept_key = await issue(cli)
    changed, changed_key = await issue(cli)
    for _ in range(2):  # activation, then the reload that caches the active license
        await check(server, kept_key, "kept.com")
        await check(server, changed_key, "changed.com")
    reads = LicenseReads(server, monkeypatch)
    for _ in range(3):
        assert await check(server, kept_key, "kept.com") == ("active", "ok")
    assert reads.count == 0
    await cli.licenses.apply(changed.id, Action.REVOKE, actor=CLI)
    assert await check(server, kept_key, "kept.com") == ("active", "ok")
    assert reads.count == 0  # only the license named in the change log is dropped
    assert await check(server, changed_key, "changed.com") == ("revoked", "revoked")
    assert reads.count == 1


async def test_a_read_that_raced_a_change_is_not_cached(server_and_cli, monkeypatch):
    """A license read before a change commits, returned after the change was reported, must
    not stay in the cache (it would be answered until the cache period ends)."""
    server, cli = server_and_cli
    license, key = await issue(cli)
    assert await check(server, key) == ("active", "activated")
    real = server.licenses.license_by_lookup
    revoke_during_the_read = True

    async def read_then_revoke(lookup):
        nonlocal revoke_during_the_read
        stale = await real(lookup)
        if revoke_during_the_read:
            revoke_during_the_read = False
            await cli.licenses.apply(license.id, Action.REVOKE, actor=CLI)
            await server.changes.catch_up()  # another check reported the change meanwhile
        return stale

    monkeypatch.setattr(server.licenses, "license_by_lookup", read_then_revoke)
    assert await check(server, key) == ("active", "ok")  # arrived before the revocation
    assert await check(server, key) == ("revoked", "revoked")


async def test_concurrent_checks_share_one_change_log_read(server_and_cli):
    server, cli = server_and_cli
    _, key = await issue(cli)
    await check(server, key)
    before = server.changes.reads
    results = await asyncio.gather(*(check(server, key) for _ in range(20)))
    assert set(results) == {("active", "ok")}
    # One read in flight, and at most one more shared by everyone who arrived during it.
    assert server.changes.reads - before <= 2


async def test_a_caller_never_gets_a_read_that_started_before_it_arrived():
    started: list[asyncio.Event] = []
    release: list[asyncio.Event] = []

    async def read() -> int:
        started.append(asyncio.Event())
        release.append(asyncio.Event())
        started[-1].set()
        await release[-1].wait()
        return len(started)

    coalesced = Coalesced(read)
    first = asyncio.create_task(coalesced())
    also_first = asyncio.create_task(coalesced())
    await asyncio.sleep(0)  # let the tasks join before the read starts
    await asyncio.wait_for(_wait_started(started, 1), 5)
    late = [asyncio.create_task(coalesced()) for _ in range(3)]  # arrive during read 1
    await asyncio.sleep(0)
    release[0].set()
    assert await first == await also_first == 1
    await asyncio.wait_for(_wait_started(started, 2), 5)
    release[1].set()
    assert [await task for task in late] == [2, 2, 2]  # one shared second read
    assert len(started) == 2


async def _wait_started(started: list[asyncio.Event], count: int) -> None:
    # The read runs in the driver task: give it turns until it has begun (bounded by the
    # caller's wait_for; no clock involved).
    while len(started) < count:  # noqa: ASYNC110 - the events are created by the read itself
        await asyncio.sleep(0)
    await started[count - 1].wait()


async def test_a_failed_read_fails_its_callers_and_the_next_read_runs_again():
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk")
        return calls

    coalesced = Coalesced(read)
    with pytest.raises(OSError, match="disk"):
        await coalesced()
    assert await coalesced() == 2


async def test_the_change_log_stays_bounded(runtime):
    async with runtime.db.write() as conn:
        await change_rows.record(conn, [(n, "bind") for n in range(change_rows.KEEP + 50)], 1)
        await change_rows.record(conn, [(None, "ban")], 1)
    async with runtime.db.read() as conn:
        rows = await conn.fetch_value("SELECT count(*) FROM license_changes")
    assert rows == change_rows.KEEP


async def test_a_reader_far_behind_flushes_everything(runtime):
    seen = []
    runtime.changes.subscribe(seen.append)
    await runtime.changes.catch_up()
    assert [c.kind for c in seen] == [ChangeKind.EVERYTHING]  # first read: trust nothing
    async with runtime.db.write() as conn:
        await change_rows.record(conn, [(7, "revoke"), (None, "someday")], 1)
    await runtime.changes.catch_up()
    assert [(c.kind, c.license_id) for c in seen[1:]] == [
        ("revoke", 7),
        (ChangeKind.EVERYTHING, None),  # a kind this version does not know
    ]
    async with runtime.db.write() as conn:
        await change_rows.record(conn, [(n, "bind") for n in range(2_000)], 1)
    await runtime.changes.catch_up()
    assert [c.kind for c in seen[3:]] == [ChangeKind.EVERYTHING]  # not 2,000 deliveries


def run_cli(server: ServerProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_cli_changes_reach_the_running_server_on_the_next_check(settings, tmp_path):
    async with open_runtime(settings) as prepare:
        await product(prepare, seats=1)
        _, revoked_key = await issue(prepare)
        _, suspended_key = await issue(prepare)
        _, reissued_key = await issue(prepare)
        keys = public_keys(prepare)
    with ServerProcess(settings.database_location(), settings.keys_dir, tmp_path) as server:
        async with aiohttp.ClientSession() as session:
            client = LicenseClient(server.url, keys, session=session)

            async def status(key: str, domain: str) -> tuple[str, str, bool]:
                result = await client.check(key, domain)
                return result.status, result.reason, result.local_key is not None

            for key in (revoked_key, suspended_key, reissued_key):
                assert await status(key, "shop.com") == ("active", "activated", True)
                assert await status(key, "shop.com") == ("active", "ok", True)  # cached
            assert await status(reissued_key, "new.com") == ("invalid", "seat_limit", False)

            run_cli(server, "revoke", revoked_key)
            assert await status(revoked_key, "shop.com") == ("revoked", "revoked", False)
            run_cli(server, "suspend", suspended_key)
            assert await status(suspended_key, "shop.com") == ("suspended", "suspended", False)
            run_cli(server, "reissue", reissued_key)
            assert await status(reissued_key, "new.com") == ("active", "activated", True)
            run_cli(server, "ban", "domain", "new.com")
            assert await status(reissued_key, "new.com") == ("suspended", "banned", False)


async def test_checks_without_changes_do_not_touch_the_change_log(server_and_cli):
    """The change signal is read from memory; the log is read only when it moved."""
    server, cli = server_and_cli
    license, key = await issue(cli)
    await check(server, key)  # activates: this process's own change moves the signal once
    await check(server, key)
    before = server.changes.reads
    for _ in range(50):
        assert await check(server, key) == ("active", "ok")
    # SQLite: no database hop per check. PostgreSQL (several hosts, no shared memory): one
    # primary-key read per check, shared by the checks that arrive while it runs.
    per_check = 0 if server.db.change_signal is not None else 1
    assert server.changes.reads == before + 50 * per_check
    await cli.licenses.apply(license.id, Action.SUSPEND, actor=CLI)  # another process
    assert await check(server, key) == ("suspended", "suspended")
    assert server.changes.reads == before + 50 * per_check + 1


async def test_checks_that_miss_the_cache_together_share_one_license_read(
    server_and_cli, monkeypatch
):
    """Issue #16 saw 33 re-reads of one key in 8 s when its cache entry lapsed: one now."""
    server, cli = server_and_cli
    license, key = await issue(cli)
    await check(server, key)
    await check(server, key)
    server.verifier.forget(license.id)  # the entry lapses
    reads = LicenseReads(server, monkeypatch)
    results = await asyncio.gather(*(check(server, key) for _ in range(20)))
    assert set(results) == {("active", "ok")}
    assert reads.count == 1


async def test_a_shared_read_that_began_before_a_change_is_not_reused(server_and_cli):
    server, cli = server_and_cli
    license, key = await issue(cli)
    await check(server, key)
    server.verifier.forget(license.id)
    first = asyncio.create_task(check(server, key))
    await asyncio.sleep(0)  # the first check has started its read
    await cli.licenses.apply(license.id, Action.REVOKE, actor=CLI)
    assert await check(server, key) == ("revoked", "revoked")  # did not join the old read
    await first


async def test_ban_reloads_are_shared_by_the_checks_that_wait_for_them(runtime, monkeypatch):
    reads = 0
    real = ban_rows.all_bans

    async def counting(conn):
        nonlocal reads
        reads += 1
        return await real(conn)

    monkeypatch.setattr(ban_rows, "all_bans", counting)
    runtime.bans.forget()
    banned = await asyncio.gather(
        *(runtime.bans.is_banned("shop.com", "203.0.113.5") for _ in range(20))
    )
    assert banned == [False] * 20
    assert reads == 1

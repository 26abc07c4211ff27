"""Crash test of several instances: one of two servers on PostgreSQL + Redis is killed under load.

Two real server processes share one PostgreSQL database, one key directory and one Redis (rate
limiting on, with limits high enough that this load never meets them, so every check goes
through the shared counters). The load generator of tests/test_crash.py sends its mix (genuine,
revoked, unknown and malformed requests, each with a unique `client_version`, which the attempt
row stores) to both instances in turn; after a counted number of answers one instance gets
SIGKILL while requests are in flight, and the load goes on until the survivor has given a
counted number of further answers. Then:

* every request whose answer was fully received is in `verification_attempts` exactly once,
  with the result the client was told (an answer is sent only after its batch's COMMIT);
* the surviving instance still answers, and stops cleanly.

These tests always run on PostgreSQL, whatever `--store` says. No timing assertions: the kill
follows a count of answers, and the waits are bounded only so that a broken server fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import itertools
import signal

from license_server.settings import Settings
from tests.server_process import ServerProcess
from tests.test_crash import KILL_AFTER, Load, _prepare, stored_as_answered
from tests.test_instances import base_env, checked, two_instances
from tests.test_instances import shared_database as _shared_database

shared_database = _shared_database  # the fixture, used here too

AFTER_KILL = 200  # answers the survivor must give after the kill


class Alternating:
    """Stands in for the one server of `Load`: each request goes to the next instance in turn
    (those to the killed one fail from the kill on, and count as cut off)."""

    def __init__(self, *servers: ServerProcess) -> None:
        self._urls = itertools.cycle([server.url for server in servers])

    @property
    def url(self) -> str:
        return next(self._urls)


def test_one_of_two_instances_killed_under_load_loses_no_acknowledged_attempt(
    tmp_path, shared_database, redis_port
):
    keys_dir = tmp_path / "keys"
    keys = asyncio.run(_prepare(Settings(database=shared_database, keys_dir=keys_dir)))
    env = {
        **base_env(shared_database, keys_dir, redis_port),
        # On, through Redis; high enough that one client IP never meets them.
        "LICENSE_SERVER_RATE_LIMIT_ENABLED": "true",
        "LICENSE_SERVER_RATE_LIMIT_PER_IP": "1000000/minute",
        "LICENSE_SERVER_RATE_LIMIT_PER_KEY": "1000000/minute",
        "LICENSE_SERVER_RATE_LIMIT_UNKNOWN_KEY_PER_IP": "1000000/minute",
    }
    with two_instances(shared_database, keys_dir, tmp_path, env) as (victim, survivor):
        load = Load(keys, Alternating(victim, survivor), kill=victim.kill, after_kill=AFTER_KILL)
        asyncio.run(load.run())
        assert victim.wait() == -signal.SIGKILL, victim.log()

        # The survivor keeps answering, signed and decided as before.
        key, domain = keys.valid[0]
        for _ in range(5):
            assert checked(survivor, key, domain)["status"] == "active", survivor.log()
        assert survivor.running, survivor.log()

    assert_nothing_lost_on(shared_database, load)


def assert_nothing_lost_on(database: str, load: Load) -> None:
    """Every acknowledged attempt is stored once with the result the client was told."""
    assert load.in_flight_at_kill > 0  # the kill did hit requests in progress
    assert not load.wrong, "\n".join(load.wrong[:20])
    assert len(load.acknowledged) >= KILL_AFTER + AFTER_KILL
    results, rows = stored_as_answered(database, load)
    cut_off_stored = sum(version in results for version in load.cut_off)
    print(
        f"\ninstances crash test: {len(load.acknowledged)} acknowledged, all stored; "
        f"{load.in_flight_at_kill} in flight at the kill, {len(load.cut_off)} cut off "
        f"({cut_off_stored} of them stored anyway); {rows} rows in all"
    )

"""Banned domains, IPs and IP ranges: a check from them answers suspended (licensing/bans.py)."""

from __future__ import annotations

import pytest

from license_server.licensing.actors import CLI
from license_server.licensing.changes import ChangeKind
from license_server.licensing.domains import InvalidHost
from tests.verify_helpers import issue, product, reference_client


@pytest.fixture
async def checker(client, app_runtime):
    await product(app_runtime, seats=5)
    return reference_client(client, app_runtime)


async def test_an_ip_inside_a_banned_range_is_suspended(checker, app_runtime):
    _, key = await issue(app_runtime, seats=5)
    assert await app_runtime.bans.ban("ip", " 203.0.113.77/24 ") == "203.0.113.0/24"
    assert await app_runtime.bans.ban("ip", "2001:DB8::/32") == "2001:db8::/32"
    for ip in ("203.0.113.1", "203.0.113.254", "2001:db8::1", "2001:db8:ffff::9"):
        result = await checker.check(key, "fine.com", ip=ip)
        assert (result.status, result.reason) == ("suspended", "banned"), ip
    for ip in ("203.0.114.1", "2001:db9::1", "::ffff:203.0.114.1"):
        assert (await checker.check(key, "fine.com", ip=ip)).status == "active", ip
    assert await app_runtime.bans.unban("ip", "203.0.113.0/24")
    assert (await checker.check(key, "fine.com", ip="203.0.113.1")).status == "active"


async def test_exact_and_range_bans_are_kept_apart(app_runtime):
    bans = app_runtime.bans
    await bans.ban("ip", "198.51.100.7")
    await bans.ban("domain", "pirate.net")
    # Without range bans the check is two set lookups; the ranges are not consulted.
    assert bans._ranges == ()
    assert await bans.is_banned("pirate.net", "192.0.2.1")
    assert await bans.is_banned("fine.com", "198.51.100.7")
    assert not await bans.is_banned("fine.com", "198.51.100.8")
    await bans.ban("ip", "10.0.0.0/8")
    assert len(bans._ranges) == 1 and "10.0.0.0/8" not in bans._ips
    assert await bans.is_banned("fine.com", "10.200.3.4")
    assert not await bans.is_banned("fine.com", "not an address")  # never raises


async def test_a_one_address_range_is_the_address(app_runtime):
    assert await app_runtime.bans.ban("ip", "192.0.2.1/32") == "192.0.2.1"
    assert await app_runtime.bans.unban("ip", "192.0.2.1")
    assert not await app_runtime.bans.unban("ip", "192.0.2.1/32")


@pytest.mark.parametrize(
    "value", ["10.0.0.0/33", "10.0.0/8", "fe80::/10%eth0", "1.2.3", "::/129", "", "a" * 5000]
)
async def test_malformed_ip_bans_are_refused(app_runtime, value):
    with pytest.raises(InvalidHost):
        await app_runtime.bans.ban("ip", value)
    assert await app_runtime.bans.all() == []


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("caf\udce9", "valid UTF-8"),
        ("two\nlines", "control characters"),
        ("x" * 501, "at most 500"),
    ],
)
async def test_a_bad_reason_is_refused_before_anything_is_written(app_runtime, reason, message):
    with pytest.raises(ValueError, match=message):
        await app_runtime.bans.ban("domain", "pirate.net", reason)
    assert await app_runtime.bans.all() == []
    await app_runtime.bans.ban("domain", "pirate.net", " Smith & Sons, ü\u00a0中 ")
    assert (await app_runtime.bans.all())[0]["reason"] == "Smith & Sons, ü\u00a0中"


async def test_bans_go_through_the_write_path_with_their_actor(app_runtime):
    seen = []
    app_runtime.changes.subscribe(seen.append)
    await app_runtime.bans.ban("domain", "pirate.net", actor=CLI)
    assert [(c.kind, c.license_id, c.actor) for c in seen] == [(ChangeKind.BAN, None, CLI)]
    assert not await app_runtime.bans.unban("domain", "never-banned.net", actor=CLI)
    assert len(seen) == 1  # nothing changed, nothing announced

"""The staff-side detectors (issue #15, seed 003): repeated sign-in failures from one IP raise
an alert and block that IP's admin sign-in; a sign-in from a network new to the account raises
an alert. Each with a near miss; state survives a restart (rebuilt from the security events)."""

from __future__ import annotations

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import alerts as alert_rows
from license_server.staff.security_events import EventKind
from license_server.web.admin import SIGN_IN_WATCH, STAFF
from license_server.web.alert_wiring import ALERT_ACTIONS
from tests.conftest import with_sections

ATTACKER = "203.0.113.50"


def _settings(settings):
    return with_sections(settings, proxy={"trusted_proxies": ["127.0.0.1"]})


async def _fail(client, ip: str, times: int, kind=EventKind.SIGN_IN_FAILED) -> None:
    events = client.app[STAFF].events
    for _ in range(times):
        await events.record(kind, typed_email="x@example.org", source_ip=ip)
    await client.app[ALERT_ACTIONS].drain()


async def _signed_in(client, account_id: int, ip: str) -> None:
    await client.app[STAFF].events.record(EventKind.SIGN_IN_OK, account_id=account_id,
                                          email="a@example.org", source_ip=ip)  # fmt: skip
    await client.app[ALERT_ACTIONS].drain()


async def _alerts(client, detector: str) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        rows = await alert_rows.alert_page(
            conn, alert_rows.AlertFilter(detector=detector), None, 50
        )
    return rows


async def _sign_in_status(client, ip: str) -> int:
    response = await client.post(
        "/admin/login", data={"email": "nobody@example.org", "password": "wrong-password-1"},
        headers={"X-Forwarded-For": ip, "Origin": str(client.make_url("")).rstrip("/")},
        allow_redirects=False,
    )  # fmt: skip
    return response.status


async def test_repeated_failures_alert_and_block_the_sign_in(aiohttp_client, settings):
    client = await aiohttp_client(create_app(_settings(settings)))
    await _fail(client, ATTACKER, 4)
    await _fail(client, ATTACKER, 2, EventKind.MFA_FAILED)  # codes count too: 6 > 5
    [alert] = await _alerts(client, "staff_sign_in_failures")
    assert alert["severity"] == "high" and alert["subject"] == f"ip:{ATTACKER}"
    assert f"blocked admin sign-in from {ATTACKER} for 60 minutes" in alert["actions_taken"]
    assert await _sign_in_status(client, ATTACKER) == 429
    assert await _sign_in_status(client, "198.51.100.9") == 400  # others sign in as before
    # Verification is not touched by a sign-in block.
    fields = {"license_key": "X", "domain": "a.com", "nonce": "n" * 16}
    response = await client.post("/api/v1/verify", data=fields,
                                 headers={"X-Forwarded-For": ATTACKER})  # fmt: skip
    assert response.status == 200


async def test_near_miss_five_failures_or_spread_over_addresses(aiohttp_client, settings):
    client = await aiohttp_client(create_app(_settings(settings)))
    await _fail(client, ATTACKER, 5)
    for n in range(10):
        await _fail(client, f"198.51.100.{n}", 1)
    assert await _alerts(client, "staff_sign_in_failures") == []
    assert await _sign_in_status(client, ATTACKER) == 400


async def test_an_attack_straddling_a_restart_is_still_seen(aiohttp_client, settings):
    settings = _settings(settings)
    first = await aiohttp_client(create_app(settings))
    await _fail(first, ATTACKER, 4)
    await first.close()
    second = await aiohttp_client(create_app(settings))  # state rebuilt from the events
    await _fail(second, ATTACKER, 2)
    assert len(await _alerts(second, "staff_sign_in_failures")) == 1


async def test_a_sign_in_from_a_new_network_alerts(aiohttp_client, settings):
    client = await aiohttp_client(create_app(_settings(settings)))
    await _signed_in(client, 7, "192.0.2.10")  # first sign-in: nothing to compare with
    await _signed_in(client, 7, "192.0.2.200")  # same /24: a near miss
    await _signed_in(client, 8, "198.51.100.7")  # another account's first
    assert await _alerts(client, "staff_new_network") == []
    await _signed_in(client, 7, "198.51.100.7")  # new for account 7
    [alert] = await _alerts(client, "staff_new_network")
    assert alert["severity"] == "low" and "198.51.100.0/24" in alert["summary"]
    # After failures from that address: medium.
    await _fail(client, "2001:db8:1::5", 2)
    await _signed_in(client, 7, "2001:db8:1::5")
    alerts = await _alerts(client, "staff_new_network")
    assert [a["severity"] for a in alerts] == ["medium", "low"]
    assert "2001:db8:1::/48" in alerts[0]["subject"]


async def test_the_sign_in_history_survives_a_restart(aiohttp_client, settings):
    settings = _settings(settings)
    first = await aiohttp_client(create_app(settings))
    await _signed_in(first, 7, "192.0.2.10")
    await first.close()
    second = await aiohttp_client(create_app(settings))
    assert second.app[SIGN_IN_WATCH] is not None
    await _signed_in(second, 7, "192.0.2.99")  # known network (rebuilt): no alert
    assert await _alerts(second, "staff_new_network") == []
    await _signed_in(second, 7, "198.51.100.1")
    assert len(await _alerts(second, "staff_new_network")) == 1


async def test_off_when_the_setting_says_so(aiohttp_client, settings):
    settings = with_sections(
        settings, staff={"new_network_alerts": False, "sign_in_block_minutes": 0}
    )
    client = await aiohttp_client(create_app(settings))
    await _signed_in(client, 7, "192.0.2.10")
    await _signed_in(client, 7, "198.51.100.1")
    assert await _alerts(client, "staff_new_network") == []
    await _fail(client, ATTACKER, 6)
    [alert] = await _alerts(client, "staff_sign_in_failures")  # alert only, no block
    assert alert["actions_taken"] == ""

"""Automatic actions on alerts (issue #15): block_ip, flag_license, suspend_license, each only
when configured, each recorded on the alert and in the audit log; a blocked address is refused
on verification and on the admin sign-in."""

from __future__ import annotations

import json

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import alerts as alert_rows
from license_server.db.audit_search import AuditFilter, audit_rows
from license_server.licensing.actors import CLI
from license_server.licensing.alerts import AlertSignal, AlertState, Severity, change_state
from license_server.settings import SettingsError, load_settings
from license_server.web.alert_wiring import ALERT_ACTIONS
from tests.conftest import with_sections
from tests.test_admin_licenses import staff_session
from tests.test_rate_limits import check, issue_key

GUESSER = "203.0.113.7"


def _settings(settings, **detectors):
    return with_sections(
        settings, proxy={"trusted_proxies": ["127.0.0.1"]},
        alert_actions={"detectors": detectors, "block_minutes": 30},
    )  # fmt: skip


async def _app(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings))
    return client, client.app[RUNTIME]


def _guessing(subject=f"ip:{GUESSER}", **evidence) -> AlertSignal:
    return AlertSignal("key_guessing", subject, Severity.HIGH, "40 unknown keys.",
                       {"unknown_keys": 40, **evidence})  # fmt: skip


def _sharing(license_id: int) -> AlertSignal:
    return AlertSignal("key_sharing", f"license:{license_id}", Severity.MEDIUM, "Shared.", {},
                       license_id)  # fmt: skip


async def _raise(client, signal: AlertSignal):
    raised = await client.app[RUNTIME].alerts.raise_(signal)
    await client.app[ALERT_ACTIONS].drain()
    async with client.app[RUNTIME].db.read() as conn:
        row = await alert_rows.get(conn, raised.alert_id)
        audit = await audit_rows(conn, AuditFilter(target=f"alert:{raised.alert_id}"), None, 10)
    return row, audit


async def _sign_in(client, ip: str):
    response = await client.post(
        "/admin/login", data={"email": "nobody@example.org", "password": "wrong-password-1"},
        headers={"X-Forwarded-For": ip, "Origin": str(client.make_url("")).rstrip("/")},
        allow_redirects=False,
    )  # fmt: skip
    return response.status


async def test_block_ip_refuses_verification_and_sign_in_from_that_address(
    aiohttp_client, settings
):
    client, runtime = await _app(aiohttp_client, _settings(settings, key_guessing="block_ip"))
    key = await issue_key(runtime)
    row, audit = await _raise(client, _guessing())
    assert row["actions_taken"].endswith(f" blocked {GUESSER} for 30 minutes\n")
    assert [(a["action"], a["actor_kind"], a["actor_id"]) for a in audit] == [
        ("alert.action", "system", "anomaly"),
    ]  # fmt: skip
    response, _ = await check(client, key, forwarded=GUESSER)
    assert response.status == 429
    assert response.headers["RateLimit-Policy"].startswith('"ip-block"')
    assert 0 < int(response.headers["Retry-After"]) <= 1800
    assert await _sign_in(client, GUESSER) == 429
    # Other addresses are not touched.
    response, _ = await check(client, key, forwarded="198.51.100.1")
    assert response.status == 200
    assert await _sign_in(client, "198.51.100.1") == 400
    # Raised again while blocked: no second block, no second record.
    row, audit = await _raise(client, _guessing())
    assert row["occurrences"] == 2 and len(audit) == 1
    # The API shows it in the evidence.
    from license_server.licensing.alerts import evidence_of

    assert evidence_of(row)["actions_taken"][0].endswith(f"blocked {GUESSER} for 30 minutes")


async def test_block_ip_takes_a_network_but_never_a_wide_one(aiohttp_client, settings):
    client, runtime = await _app(aiohttp_client, _settings(settings, key_guessing="block_ip"))
    key = await issue_key(runtime)
    await _raise(client, _guessing("net:203.0.113.0/24"))
    response, _ = await check(client, key, forwarded="203.0.113.200")
    assert response.status == 429
    row, _ = await _raise(client, _guessing("net:10.0.0.0/8", network="0.0.0.0/0", ip="junk"))
    assert "none (block_ip: no address" in row["actions_taken"]
    response, _ = await check(client, key, forwarded="10.1.2.3")
    assert response.status == 200


async def test_off_by_default_nothing_happens(aiohttp_client, settings):
    client, runtime = await _app(aiohttp_client, _settings(settings))
    key = await issue_key(runtime)
    license = await runtime.licenses.license_by_key(key)
    row, audit = await _raise(client, _guessing())
    row2, _ = await _raise(client, _sharing(license.id))
    assert row["actions_taken"] == row2["actions_taken"] == "" and audit == []
    response, body = await check(client, key, forwarded=GUESSER)
    assert response.status == 200 and json.loads(body)["status"] == "active"
    assert (await runtime.licenses.license_by_id(license.id)).status.value == "active"


async def test_suspend_license_suspends_through_the_write_path(aiohttp_client, settings):
    client, runtime = await _app(aiohttp_client, _settings(settings, key_sharing="suspend_license"))
    key = await issue_key(runtime)
    await check(client, key)  # binds and activates
    license = await runtime.licenses.license_by_key(key)
    signal = AlertSignal("key_sharing", f"license:{license.id}", Severity.HIGH,
                         "Checked from 9 sites; 2 seats.", {"sites": 9}, license.id)  # fmt: skip
    row, _ = await _raise(client, signal)
    assert (await runtime.licenses.license_by_id(license.id)).status.value == "suspended"
    assert f"suspended license {license.id}" in row["actions_taken"]
    async with runtime.db.read() as conn:
        suspended = await audit_rows(conn, AuditFilter(action="license.suspend"), None, 5)
    assert [(r["actor_kind"], r["actor_id"]) for r in suspended] == [("system", "anomaly")]
    _, body = await check(client, key)
    assert json.loads(body)["status"] == "suspended"
    # Staff unsuspend; the same unresolved alert firing again does not suspend it again.
    from license_server.licensing.lifecycle import Action

    await runtime.licenses.apply(license.id, Action.UNSUSPEND, actor=CLI)
    row, _ = await _raise(client, signal)
    assert row["occurrences"] == 2
    assert (await runtime.licenses.license_by_id(license.id)).status.value == "active"


async def test_suspend_of_a_revoked_license_is_recorded_not_raised(aiohttp_client, settings):
    client, runtime = await _app(aiohttp_client, _settings(settings, key_sharing="suspend_license"))
    key = await issue_key(runtime)
    license = await runtime.licenses.license_by_key(key)
    from license_server.licensing.lifecycle import Action

    await runtime.licenses.apply(license.id, Action.REVOKE, actor=CLI)
    row, _ = await _raise(client, _sharing(license.id))
    assert "not suspended" in row["actions_taken"]


async def test_flag_license_marks_the_license_page_until_resolved(aiohttp_client, settings):
    client, runtime = await _app(aiohttp_client, _settings(settings, key_sharing="flag_license"))
    key = await issue_key(runtime)
    license = await runtime.licenses.license_by_key(key)
    row, _ = await _raise(client, _sharing(license.id))
    assert f"flagged license {license.id}" in row["actions_taken"]
    browser = await staff_session(client, "license_manager")
    _, page = await browser.get(f"/admin/licenses/{license.id}")
    assert "Flagged by anomaly detection" in page and f'href="/admin/alerts/{row["id"]}"' in page
    await change_state(runtime.licenses, CLI, row["id"], AlertState.RESOLVED)
    _, page = await browser.get(f"/admin/licenses/{license.id}")
    assert "Flagged by anomaly detection" not in page
    # Unflagged: the license still works (a flag is a marker only).
    _, body = await check(client, key)
    assert json.loads(body)["status"] == "active"


@pytest.mark.parametrize(
    "value",
    ['{"key_guessing": "ban_forever"}', '{"Key Guessing": "block_ip"}', '["block_ip"]'],
)
def test_bad_action_settings_stop_start_up(value, tmp_path):
    with pytest.raises(SettingsError):
        load_settings(None, {"LICENSE_SERVER_ALERT_ACTIONS_DETECTORS": value})

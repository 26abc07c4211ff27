"""Detectors and automatic actions together (issue #15): a key-guessing run found by the
detector on real /api/v1/verify requests blocks its network when `key_guessing = "block_ip"`,
and with the default (no action) the same run only raises the alert."""

from __future__ import annotations

import secrets

import pytest

from license_server.app import create_app
from license_server.appkeys import ANOMALY, RUNTIME
from license_server.web.alert_wiring import ALERT_ACTIONS
from tests.anomaly_helpers import alerts, by_detector
from tests.conftest import with_sections
from tests.test_anomaly_end_to_end import GENEROUS, check
from tests.verify_helpers import issue, nonce, product


@pytest.mark.parametrize("action", ["block_ip", None])
async def test_a_guessing_network_is_blocked_only_when_the_action_is_on(
    aiohttp_client, settings, action
):
    detectors = {"key_guessing": action} if action else {}
    settings = with_sections(
        settings,
        rate_limit=GENEROUS,
        anomaly={"key_guessing_per_network": 10},
        alert_actions={"detectors": detectors, "block_minutes": 30},
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    await product(runtime)
    _, key = await issue(runtime)
    assert (await check(client, key))["status"] == "active"
    for _ in range(10):
        await check(client, "NOPE-" + secrets.token_hex(8))
    await client.app[ANOMALY].work()
    await client.app[ALERT_ACTIONS].drain()
    (alert,) = by_detector(await alerts(runtime.db), "key_guessing")
    assert alert["subject"] == "net:127.0.0.0/24"
    # The genuine key from the guessing network: refused while the block lasts, if it is on.
    response = await client.post(
        "/api/v1/verify", data={"license_key": key, "domain": "shop.com", "nonce": nonce()}
    )
    if action:
        assert response.status == 429 and int(response.headers["Retry-After"]) > 0
        assert "blocked 127.0.0.0/24 for 30 minutes" in alert["actions_taken"]
    else:
        assert response.status == 200 and (await response.json())["status"] == "active"
        assert alert["actions_taken"] == ""

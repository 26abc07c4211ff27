"""The detectors inside the server: real /api/v1/verify requests, the alerts table, a restart.

The alert task runs in the app; `engine.work()` waits for its current round and does one more,
so a test reads the alerts table after every finding is written, without sleeping.
"""

from __future__ import annotations

import secrets

from license_server.app import create_app
from license_server.appkeys import ANOMALY, RUNTIME
from license_server.settings import RateLimitSettings
from tests.anomaly_helpers import alerts, by_detector
from tests.conftest import with_sections
from tests.verify_helpers import attempts, issue, nonce, product

VERIFY = "/api/v1/verify"
GENEROUS = RateLimitSettings(
    per_ip="100000/minute", per_key="100000/minute", unknown_key_per_ip="100000/minute"
).model_dump()


async def check(client, key: str, domain: str = "shop.com") -> dict:
    response = await client.post(
        VERIFY, data={"license_key": key, "domain": domain, "nonce": nonce()}
    )
    assert response.status in (200, 429)
    return await response.json()


async def written_alerts(client) -> list[dict]:
    await client.app[ANOMALY].work()
    return await alerts(client.app[RUNTIME].db)


async def test_a_flooding_license_alerts_through_real_verify_requests(aiohttp_client, settings):
    client = await aiohttp_client(
        create_app(with_sections(settings, rate_limit=GENEROUS, anomaly={"refire_seconds": 3600}))
    )
    runtime = client.app[RUNTIME]
    await product(runtime)
    license, key = await issue(runtime)
    for _ in range(60):
        assert (await check(client, key))["status"] == "active"
    assert by_detector(await written_alerts(client), "check_flooding") == []
    await check(client, key)  # the 61st in an hour
    (alert,) = by_detector(await written_alerts(client), "check_flooding")
    assert alert["license_id"] == license.id and alert["state"] == "open"
    assert "checked 61 times in an hour" in alert["summary"]
    logged = {row["id"] for row in await attempts(runtime)}
    assert set(alert["evidence"]["sample_attempt_ids"]) <= logged
    assert len(alert["evidence"]["sample_attempt_ids"]) == 5


async def test_checks_refused_by_the_per_key_limit_carry_the_license_and_count(
    aiohttp_client, settings
):
    limits = {**GENEROUS, "per_key": "5/minute"}
    client = await aiohttp_client(
        create_app(
            with_sections(settings, rate_limit=limits, anomaly={"flooding_checks_per_hour": 9})
        )
    )
    runtime = client.app[RUNTIME]
    await product(runtime)
    license, key = await issue(runtime)
    for _ in range(10):
        await check(client, key)
    rows = await attempts(runtime)
    limited = [row for row in rows if row["result"] == "rate_limited"]
    assert len(limited) == 5
    assert {row["license_id"] for row in limited} == {license.id}  # attributed
    assert {row["reason"] for row in limited} == {"per-key"}
    (alert,) = by_detector(await written_alerts(client), "check_flooding")
    assert alert["license_id"] == license.id


async def test_key_guessing_straddling_a_restart_is_detected(aiohttp_client, settings):
    """Two app instances in turn on one database: 20 guesses before the restart, 10 after."""
    settings = with_sections(settings, rate_limit=GENEROUS)
    first = await aiohttp_client(create_app(settings))
    for _ in range(20):
        document = await check(first, "NOPE-" + secrets.token_hex(8))
        assert document["reason"] == "unknown_key"
    assert await written_alerts(first) == []
    await first.close()

    second = await aiohttp_client(create_app(settings))
    for _ in range(9):
        await check(second, "NOPE-" + secrets.token_hex(8))
    assert await written_alerts(second) == []  # rebuilt quietly: 29 guesses so far
    await check(second, "NOPE-" + secrets.token_hex(8))
    (alert,) = by_detector(await written_alerts(second), "key_guessing")
    assert alert["subject"] == "net:127.0.0.0/24"
    assert "30 checks with unknown or forged license keys" in alert["summary"]
    await second.close()


async def test_without_the_rebuild_the_straddling_attack_would_be_missed(aiohttp_client, settings):
    settings = with_sections(settings, rate_limit=GENEROUS, anomaly={"rebuild_max_rows": 0})
    first = await aiohttp_client(create_app(settings))
    for _ in range(20):
        await check(first, "NOPE-" + secrets.token_hex(8))
    await first.close()
    second = await aiohttp_client(create_app(settings))
    for _ in range(10):
        await check(second, "NOPE-" + secrets.token_hex(8))
    assert await written_alerts(second) == []
    await second.close()


async def test_activation_churn_from_binds_and_releases(aiohttp_client, settings):
    client = await aiohttp_client(create_app(with_sections(settings, rate_limit=GENEROUS)))
    runtime = client.app[RUNTIME]
    await product(runtime, seats=1)
    churned, key = await issue(runtime)
    _, steady_key = await issue(runtime)
    await check(client, steady_key, "steady.com")
    for i in range(5):  # five sites in turn, each freed for the next
        assert (await check(client, key, f"site{i}.com"))["status"] == "active"
        await runtime.licenses.release_binding(churned.id, "domain", f"site{i}.com")
    assert by_detector(await written_alerts(client), "activation_churn") == []  # near miss
    assert (await check(client, key, "site5.com"))["status"] == "active"  # the sixth bind
    (alert,) = by_detector(await written_alerts(client), "activation_churn")
    assert alert["license_id"] == churned.id
    assert "activated on a website 6 times in the last 7 days" in alert["summary"]
    assert alert["evidence"]["releases_and_reissues"] == 5


async def test_churn_is_rebuilt_from_the_change_log_at_start_up(aiohttp_client, settings):
    settings = with_sections(settings, rate_limit=GENEROUS)
    first = await aiohttp_client(create_app(settings))
    runtime = first.app[RUNTIME]
    await product(runtime, seats=1)
    license, key = await issue(runtime)
    for i in range(5):
        await check(first, key, f"site{i}.com")
        await runtime.licenses.release_binding(license.id, "domain", f"site{i}.com")
    await first.close()
    second = await aiohttp_client(create_app(settings))
    assert by_detector(await written_alerts(second), "activation_churn") == []
    await check(second, key, "site5.com")
    assert len(by_detector(await written_alerts(second), "activation_churn")) == 1
    await second.close()


async def test_detectors_switched_off_leave_no_engine(aiohttp_client, settings):
    client = await aiohttp_client(create_app(with_sections(settings, anomaly={"enabled": False})))
    assert ANOMALY not in client.app

"""Rate limits on `POST /api/v1/verify`: per-ip, per-key, unknown keys, off, Redis, fail-open."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.client import verify_answer
from license_server.licensing.service import NotFound
from license_server.licensing.specs import LicenseSpec
from license_server.settings import (
    ProxySettings,
    RateLimitSettings,
    Settings,
    SettingsError,
    load_settings,
)
from license_server.web.rate_limit import RateLimiter
from tests.conftest import PRODUCT, with_sections
from tests.services import (
    free_port,
    redis_command,
    redis_executable,
    start_redis,
    start_redis_on,
    stop_process,
)
from tests.verify_helpers import assert_signed, nonce, public_keys

VERIFY = "/api/v1/verify"
RATE_LIMIT_HEADER = re.compile(r'^"(?P<policy>[a-z-]+)";r=0;t=(?P<t>\d+)$')


def make_settings(settings: Settings, **sections) -> Settings:
    return with_sections(settings, **sections)


def verified(runtime, response, body: bytes, sent: str) -> dict:
    """The answer as the reference client accepts it: signed, our nonce, fresh."""
    signature = response.headers["License-Signature"]
    return verify_answer(body, signature, public_keys(runtime), nonce=sent, now=time.time())


async def issue_key(runtime, licensee: str = "A") -> str:
    try:
        await runtime.licenses.product(PRODUCT.code)
    except NotFound:
        await runtime.licenses.create_product(PRODUCT)
    _, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee=licensee, email="a@example.org")
    )
    return key


async def check(client, key: str, *, sent: str | None = None, forwarded: str | None = None):
    fields = {"license_key": key, "domain": "shop.com", "nonce": sent or nonce()}
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    response = await client.post(VERIFY, data=fields, headers=headers)
    return response, await response.read()


async def attempt_rows(runtime) -> list[dict]:
    async with runtime.db.read() as conn:
        return await conn.fetch_all("SELECT * FROM verification_attempts ORDER BY id")


def assert_limited(response, body: bytes, runtime, policy: str, quota: int, window: int) -> dict:
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= window
    assert response.headers["RateLimit-Policy"] == f'"{policy}";q={quota};w={window}'
    match = RATE_LIMIT_HEADER.match(response.headers["RateLimit"])
    assert match and match["policy"] == policy and match["t"] == retry_after
    assert_signed(runtime, response, body)
    problem = json.loads(body)
    assert problem["status"] == 429 and problem["type"].endswith("/rate-limited")
    assert policy in problem["detail"]
    return problem


# -- per-ip ---------------------------------------------------------------------------------


async def test_per_ip_limit_refuses_the_request_after_the_quota(aiohttp_client, settings):
    settings = make_settings(settings, rate_limit=RateLimitSettings(per_ip="3/minute"))
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    for _ in range(3):
        response, _ = await check(client, key)
        assert response.status == 200
    response, body = await check(client, key)
    problem = assert_limited(response, body, runtime, "per-ip", 3, 60)
    assert "nonce" not in problem  # refused before the body was read
    rows = await attempt_rows(runtime)
    assert [row["result"] for row in rows] == ["active"] * 3 + ["rate_limited"]
    limited = rows[-1]
    assert limited["reason"] == "per-ip"
    assert limited["source_ip"] == "127.0.0.1"
    assert limited["license_id"] is None and limited["key_hash"] is None


async def test_per_ip_limit_counts_malformed_requests_too(aiohttp_client, settings):
    settings = make_settings(settings, rate_limit=RateLimitSettings(per_ip="2/minute"))
    client = await aiohttp_client(create_app(settings))
    for _ in range(2):
        response = await client.post(VERIFY, data={"domain": "shop.com"})
        assert response.status == 400
    response = await client.post(VERIFY, data={"domain": "shop.com"})
    assert response.status == 429


# -- per-key --------------------------------------------------------------------------------


async def test_per_key_limit_applies_across_client_ips(aiohttp_client, settings):
    settings = make_settings(
        settings,
        rate_limit=RateLimitSettings(per_ip="1000/minute", per_key="4/minute"),
        proxy=ProxySettings(trusted_proxies=("127.0.0.1",)),
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    for n in range(4):
        response, _ = await check(client, key, forwarded=f"203.0.113.{n + 1}")
        assert response.status == 200
    sent = nonce()
    response, body = await check(client, key, sent=sent, forwarded="198.51.100.9")
    assert_limited(response, body, runtime, "per-key", 4, 60)
    # A per-key refusal comes after parsing: it echoes the nonce and is fresh, so the reference
    # client accepts it as the genuine answer to its own request.
    document = verified(runtime, response, body, sent)
    assert document["nonce"] == sent and isinstance(document["server_time"], int)

    rows = await attempt_rows(runtime)
    assert [row["source_ip"] for row in rows] == [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "203.0.113.4",
        "198.51.100.9",
    ]
    assert (rows[-1]["result"], rows[-1]["reason"]) == ("rate_limited", "per-key")
    assert rows[-1]["domain"] == "shop.com"  # the body was read before the per-key check

    # Another key is not affected, from any address.
    other = await issue_key(runtime, licensee="B")
    response, _ = await check(client, other, forwarded="198.51.100.9")
    assert response.status == 200


# -- unknown-key-per-ip ---------------------------------------------------------------------


def forged(key: str) -> str:
    """The same key with one signature character changed: shaped right, does not verify."""
    index = len(key) - 10
    replacement = "A" if key[index] != "A" else "B"
    return key[:index] + replacement + key[index + 1 :]


async def test_unknown_keys_exhaust_a_stricter_budget_per_ip(aiohttp_client, settings):
    settings = make_settings(
        settings,
        rate_limit=RateLimitSettings(per_ip="1000/minute", unknown_key_per_ip="3/minute"),
        proxy=ProxySettings(trusted_proxies=("127.0.0.1",)),
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    guesses = ["NOPE-" + secrets.token_hex(8), forged(key), "GUESS-" + secrets.token_hex(8)]
    for guess in guesses:
        response, body = await check(client, guess, forwarded="203.0.113.66")
        assert response.status == 200
        assert json.loads(body)["status"] == "invalid"
    reasons = [row["reason"] for row in await attempt_rows(runtime)]
    assert reasons == ["unknown_key", "bad_signature", "unknown_key"]

    # Another guess from that address is refused before its key is looked up...
    response, body = await check(client, "MORE-" + secrets.token_hex(8), forwarded="203.0.113.66")
    assert_limited(response, body, runtime, "unknown-key-per-ip", 3, 60)
    row = (await attempt_rows(runtime))[-1]
    assert (row["result"], row["reason"]) == ("rate_limited", "unknown-key-per-ip")
    assert row["source_ip"] == "203.0.113.66"
    # ... and so is another forged one (its signature does not verify: still a guess).
    index = len(key) - 10
    another_forgery = key[:index] + ("C" if key[index] != "C" else "D") + key[index + 1 :]
    response, body = await check(client, another_forgery, forwarded="203.0.113.66")
    assert_limited(response, body, runtime, "unknown-key-per-ip", 3, 60)

    # A genuine key from the same address (shared hosting) is not collateral damage of the
    # guessing: its signature verifies, so it is answered (issue #11, item 6).
    response, body = await check(client, key, forwarded="203.0.113.66")
    assert response.status == 200 and json.loads(body)["status"] == "active"

    # Another address is unaffected.
    response, body = await check(client, key, forwarded="203.0.113.67")
    assert response.status == 200 and json.loads(body)["status"] == "active"


async def test_valid_keys_do_not_consume_the_unknown_key_budget(aiohttp_client, settings):
    settings = make_settings(
        settings,
        rate_limit=RateLimitSettings(
            per_ip="1000/minute", per_key="1000/minute", unknown_key_per_ip="3/minute"
        ),
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    for _ in range(20):
        response, body = await check(client, key)
        assert response.status == 200 and json.loads(body)["status"] == "active"
    # The whole guessing budget is still there: three unknown keys are decided...
    for _ in range(3):
        response, body = await check(client, "NOPE-" + secrets.token_hex(8))
        assert response.status == 200 and json.loads(body)["reason"] == "unknown_key"
    # ...and only then is the address barred from guessing (a genuine key still is not).
    response, _ = await check(client, "NOPE-" + secrets.token_hex(8))
    assert response.status == 429
    assert response.headers["RateLimit-Policy"].startswith('"unknown-key-per-ip"')


# -- switched off ---------------------------------------------------------------------------


async def assert_never_limited(client, runtime, requests: int) -> None:
    key = await issue_key(runtime)
    statuses = set()
    for _ in range(requests):
        response, _ = await check(client, key)
        statuses.add(response.status)
        response, _ = await check(client, "NOPE-" + secrets.token_hex(8))
        statuses.add(response.status)
    assert statuses == {200}


def assert_warned_off(caplog) -> None:
    warnings = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "rate limiting is OFF" in record.getMessage()
    ]
    assert len(warnings) == 1


async def test_disabled_rate_limiting_never_refuses_and_warns(aiohttp_client, settings, caplog):
    caplog.set_level(logging.WARNING)
    settings = make_settings(
        settings,
        rate_limit=RateLimitSettings(
            enabled=False, per_ip="1/minute", per_key="1/minute", unknown_key_per_ip="1/minute"
        ),
    )
    client = await aiohttp_client(create_app(settings))
    assert_warned_off(caplog)
    await assert_never_limited(client, client.app[RUNTIME], 10)


async def test_rate_limiting_can_be_disabled_from_the_environment(aiohttp_client, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    path = tmp_path / "settings.toml"
    path.write_text('[rate_limit]\nper_ip = "1/minute"\n')
    settings = load_settings(
        path,
        environ={
            "LICENSE_SERVER_RATE_LIMIT_ENABLED": "false",
            "LICENSE_SERVER_DATABASE": str(tmp_path / "data" / "env.db"),
            "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
        },
    )
    assert settings.rate_limit.enabled is False
    assert settings.rate_limit.per_ip == "1/minute"
    client = await aiohttp_client(create_app(settings))
    assert_warned_off(caplog)
    await assert_never_limited(client, client.app[RUNTIME], 5)


async def test_enabled_rate_limiting_does_not_warn(aiohttp_client, settings, caplog):
    caplog.set_level(logging.WARNING)
    await aiohttp_client(create_app(make_settings(settings)))
    assert not any("rate limiting is OFF" in r.getMessage() for r in caplog.records)


# -- Redis storage --------------------------------------------------------------------------


async def test_instances_sharing_redis_share_the_per_ip_budget(
    aiohttp_client, settings, redis_port
):
    limits = RateLimitSettings(
        storage_uri=f"async+redis://127.0.0.1:{redis_port}", per_ip="4/minute"
    )
    first = await aiohttp_client(create_app(make_settings(settings, rate_limit=limits)))
    second = await aiohttp_client(create_app(make_settings(settings, rate_limit=limits)))
    assert await first.app[RUNTIME].db.ping()
    statuses = []
    for client in (first, second, first, second):
        response, _ = await check(client, "NOPE-" + secrets.token_hex(8))
        statuses.append(response.status)
    assert statuses == [200] * 4
    # Each instance has seen only two requests, but the budget of four is shared and spent.
    for client in (first, second):
        response, body = await check(client, "NOPE-" + secrets.token_hex(8))
        assert_limited(response, body, client.app[RUNTIME], "per-ip", 4, 60)
    # The counters really live in Redis.
    reply = redis_command(redis_port, b"DBSIZE")
    assert reply.startswith(b":") and int(reply[1:].strip()) >= 1


async def test_redis_storage_uri_without_async_prefix_works(aiohttp_client, settings, redis_port):
    limits = RateLimitSettings(storage_uri=f"redis://127.0.0.1:{redis_port}", per_ip="1/minute")
    client = await aiohttp_client(create_app(make_settings(settings, rate_limit=limits)))
    response, _ = await check(client, "NOPE-" + secrets.token_hex(8))
    assert response.status == 200
    response, _ = await check(client, "NOPE-" + secrets.token_hex(8))
    assert response.status == 429


async def test_unreachable_redis_fails_open(aiohttp_client, settings, caplog):
    caplog.set_level(logging.INFO, logger="license_server")
    limits = RateLimitSettings(
        storage_uri=f"async+redis://127.0.0.1:{free_port()}", per_ip="1/minute"
    )
    client = await aiohttp_client(create_app(make_settings(settings, rate_limit=limits)))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    started = time.monotonic()
    for _ in range(3):  # beyond the quota of one: nothing is counted while Redis is down
        sent = nonce()
        response, body = await check(client, key, sent=sent)
        assert response.status == 200
        document = verified(runtime, response, body, sent)
        assert document["status"] == "active"
    assert time.monotonic() - started < 30  # retries are bounded: no hang
    # One warning for the outage, not one traceback per request.
    (warning,) = storage_log(caplog)
    assert warning.levelno == logging.WARNING and "fail-open" in warning.getMessage()
    assert warning.exc_info is None and "\n" not in warning.getMessage()
    assert [row["result"] for row in await attempt_rows(runtime)] == ["active"] * 3


def storage_log(caplog) -> list[logging.LogRecord]:
    """What the rate limiter logged about its storage."""
    return [
        record
        for record in caplog.records
        if record.name == "license_server.web.rate_limit" and "storage" in record.getMessage()
    ]


async def test_a_redis_outage_logs_one_warning_then_one_recovery_line(
    aiohttp_client, tmp_path, settings, caplog
):
    executable = redis_executable()
    caplog.set_level(logging.INFO, logger="license_server")
    process, port = start_redis(executable, tmp_path)
    try:
        limits = RateLimitSettings(
            storage_uri=f"async+redis://127.0.0.1:{port}", per_ip="1000/minute"
        )
        client = await aiohttp_client(create_app(make_settings(settings, rate_limit=limits)))
        runtime = client.app[RUNTIME]
        key = await issue_key(runtime)
        assert (await check(client, key))[0].status == 200
        assert storage_log(caplog) == []

        stop_process(process)
        for _ in range(10):  # many requests during the outage: all answered, one warning
            assert (await check(client, key))[0].status == 200
        (outage,) = storage_log(caplog)
        assert outage.levelno == logging.WARNING and "fail-open" in outage.getMessage()
        assert outage.exc_info is None and "\n" not in outage.getMessage()

        process = start_redis_on(executable, tmp_path, port)
        if process is None:
            pytest.fail(f"redis-server did not restart on port {port}")
        deadline = time.monotonic() + 20
        while len(storage_log(caplog)) < 2 and time.monotonic() < deadline:
            assert (await check(client, key))[0].status == 200  # until it reconnects
        for _ in range(5):
            assert (await check(client, key))[0].status == 200
        outage_again, recovered = storage_log(caplog)
        assert outage_again is outage
        assert "works again" in recovered.getMessage() and recovered.exc_info is None
        assert redis_command(port, b"DBSIZE") != b":0\r\n"  # counting in Redis again
    finally:
        if process is not None:
            stop_process(process)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["per_ip", "per_key", "unknown_key_per_ip"])
def test_a_bad_rate_in_the_file_is_one_line_naming_the_setting(tmp_path, name):
    path = tmp_path / "settings.toml"
    path.write_text(f'[rate_limit]\n{name} = "lots"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert f"rate_limit.{name}" in message and "'lots'" in message and str(path) in message


def test_a_bad_rate_from_the_environment_names_the_variable(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("")
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={"LICENSE_SERVER_RATE_LIMIT_PER_KEY": "10 per fortnight"})
    message = str(info.value)
    assert "\n" not in message
    assert "rate_limit.per_key" in message and "LICENSE_SERVER_RATE_LIMIT_PER_KEY" in message


# -- regressions ----------------------------------------------------------------------------


async def test_concurrent_guesses_cannot_overrun_the_unknown_key_budget(aiohttp_client, settings):
    settings = make_settings(
        settings, rate_limit=RateLimitSettings(per_ip="1000/minute", unknown_key_per_ip="3/minute")
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    await issue_key(runtime)
    answers = await asyncio.gather(*(check(client, f"Guess-{n:04d}") for n in range(30)))
    statuses = sorted(response.status for response, _ in answers)
    # All 30 passed the budget test before any was decided; only 3 decisions may go out.
    assert statuses == [200] * 3 + [429] * 27
    for response, body in answers:
        if response.status == 429:
            assert_limited(response, body, runtime, "unknown-key-per-ip", 3, 60)


async def test_respelling_a_key_does_not_reset_its_budget(aiohttp_client, settings):
    settings = make_settings(
        settings,
        rate_limit=RateLimitSettings(per_key="2/minute"),
        proxy=ProxySettings(trusted_proxies=("127.0.0.1",)),
    )
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    key = await issue_key(runtime)
    prefix, body = key.split("-")
    spellings = [key, key.lower(), f"{prefix}-{body.replace('0', 'O').replace('1', 'l')}"]
    statuses = []
    for n, spelling in enumerate(spellings):
        response, _ = await check(client, spelling, forwarded=f"198.51.100.{n}")
        statuses.append(response.status)
    assert statuses == [200, 200, 429]


def test_a_setting_with_several_rates_or_zero_is_refused(tmp_path):
    for bad in ("10/minute;20/hour", "10/minute,20/hour", "0/minute"):
        path = tmp_path / "s.toml"
        path.write_text(f'[rate_limit]\nper_ip = "{bad}"\n')
        with pytest.raises(SettingsError, match=r"rate_limit\.per_ip"):
            load_settings(path, environ={})


async def test_in_memory_limits_do_no_thread_work_per_request():
    """limits' async memory storage hopped to a thread for every key after a hit (and its
    sync twin started a new timer thread every 10 ms): one long-lived expiry thread now."""
    limiter = RateLimiter(RateLimitSettings(per_ip="100000/minute", per_key="100000/minute"))
    try:
        started = threading.active_count()
        loop = asyncio.get_running_loop()
        executor_before = getattr(loop, "_default_executor", None)
        for n in range(2000):
            assert await limiter.before_reading(f"192.0.2.{n % 200}") is None
            assert await limiter.for_key(lambda n=n: f"key-{n % 50}") is None
            await asyncio.sleep(0)  # let any background work the storage scheduled run
        assert threading.active_count() <= started
        assert getattr(loop, "_default_executor", None) is executor_before  # no to_thread
    finally:
        limiter.close()

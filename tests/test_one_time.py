"""One-time values: accepted once, on one instance or across instances sharing Redis."""

from __future__ import annotations

import asyncio

import pytest

from license_server.one_time import (
    MemoryOneTimeValues,
    OneTimeStoreUnavailable,
    RedisOneTimeValues,
    one_time_values,
)
from license_server.settings import Settings
from tests.services import redis_command


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_accepts_a_value_once_within_its_lifetime():
    clock = Clock()
    once = MemoryOneTimeValues(clock)
    assert await once.claim("totp", "123456", 90)
    assert not await once.claim("totp", "123456", 90)
    assert await once.claim("setup", "123456", 90)  # namespaces are separate
    clock.now += 90
    assert await once.claim("totp", "123456", 90)  # the lifetime is over: a new claim


async def test_memory_forgets_expired_values():
    clock = Clock()
    once = MemoryOneTimeValues(clock)
    for n in range(1000):
        assert await once.claim("totp", str(n), 30)
    clock.now += 31
    await once.claim("totp", "fresh", 30)
    assert len(once._expiry) == 1  # bounded by what is live, not by all ever claimed


@pytest.fixture
async def two_instances(redis_port):
    url = f"redis://127.0.0.1:{redis_port}/0"
    first, second = RedisOneTimeValues(url), RedisOneTimeValues(url)
    yield first, second
    await first.close()
    await second.close()


async def test_redis_shares_the_first_claim_between_instances(two_instances, redis_port):
    first, second = two_instances
    assert await first.claim("totp", "654321", 90)
    assert not await second.claim("totp", "654321", 90)
    assert not await first.claim("totp", "654321", 90)
    # Only a digest is stored, never the value itself, and it expires.
    keys = redis_command(redis_port, b"KEYS *")
    assert b"654321" not in keys and b"license-server:once:totp:" in keys
    ttl = redis_command(redis_port, b"PTTL " + keys.split(b"\r\n")[2])
    assert 0 < int(ttl[1:].strip()) <= 90_000


async def test_concurrent_claims_on_two_instances_have_one_winner(two_instances):
    first, second = two_instances
    results = await asyncio.gather(
        *((first if n % 2 else second).claim("setup-link", "token-abc", 3600) for n in range(50))
    )
    assert results.count(True) == 1


@pytest.mark.parametrize("make", ["memory", "redis"])
async def test_hostile_values_are_hashed_and_bad_namespaces_refused(make, redis_port):
    once = (
        MemoryOneTimeValues()
        if make == "memory"
        else RedisOneTimeValues(f"redis://127.0.0.1:{redis_port}/0")
    )
    try:
        huge = "x" * 1_000_000
        assert await once.claim("totp", huge, 30)
        assert not await once.claim("totp", huge, 30)
        assert await once.claim("totp", "\udcff\x00", 30)  # not UTF-8, NUL: still one value
        for namespace in ("", "a:b"):
            with pytest.raises(ValueError, match="namespace"):
                await once.claim(namespace, "v", 30)
        with pytest.raises(ValueError, match="ttl"):
            await once.claim("totp", "v", 0)
    finally:
        await once.close()


async def test_an_unreachable_redis_fails_closed(tmp_path):
    from tests.services import free_port

    once = RedisOneTimeValues(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(OneTimeStoreUnavailable):  # never "True"
            await once.claim("totp", "111111", 30)
    finally:
        await once.close()


def test_redis_url_selects_the_shared_store(tmp_path):
    assert isinstance(one_time_values(Settings()), MemoryOneTimeValues)
    shared = one_time_values(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert isinstance(shared, RedisOneTimeValues)

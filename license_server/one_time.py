"""One-time values that every instance agrees on: a value is accepted once within its lifetime.

The staff sign-in (a TOTP code is accepted once, RFC 6238 section 5.2; a set-up link is single
use) and the customer page (an e-mailed confirmation link) need "has this been used?" answered
the same by every instance behind a load balancer. The first `claim` of a value wins, on
whichever instance it arrives; every later claim within `ttl_seconds` is refused.

One process keeps them in memory; with `redis_url` set they live in Redis (`SET key NX PX`,
atomic on the server, so two instances claiming at once cannot both win). Only a SHA-256 of
the value is stored: a set-up token or a recovery code is a secret, and the store must not
become a copy of them. When Redis cannot answer, `claim` raises `OneTimeStoreUnavailable`:
callers refuse (fail closed), since accepting a code twice is the failure this prevents.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from license_server.settings import Settings

_KEY_PREFIX = "license-server:once:"


class OneTimeStoreUnavailable(Exception):
    """The shared store could not answer: treat the value as already used."""


def _digest(namespace: str, value: str) -> str:
    if not namespace or ":" in namespace:
        raise ValueError("namespace: a non-empty name without ':'")
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{namespace}:{digest}"


class OneTimeValues(Protocol):
    async def claim(self, namespace: str, value: str, ttl_seconds: float) -> bool:
        """True for the first claim of `value` in `namespace` within `ttl_seconds`."""

    async def close(self) -> None: ...


class MemoryOneTimeValues:
    """One process's one-time values; expired entries are dropped as new ones arrive, so
    memory is bounded by what was claimed within the longest lifetime in use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    async def claim(self, namespace: str, value: str, ttl_seconds: float) -> bool:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        key, now = _digest(namespace, value), self._clock()
        while self._heap and self._heap[0][0] <= now:
            expires, old = heapq.heappop(self._heap)
            if self._expiry.get(old) == expires:
                del self._expiry[old]
        if key in self._expiry:
            return False
        self._expiry[key] = now + ttl_seconds
        heapq.heappush(self._heap, (now + ttl_seconds, key))
        return True

    async def close(self) -> None:
        self._expiry.clear()
        self._heap.clear()


class RedisOneTimeValues:
    """One-time values in Redis, shared by every instance that uses the same server."""

    def __init__(self, url: str) -> None:
        self._redis = redis_asyncio.from_url(url)

    async def claim(self, namespace: str, value: str, ttl_seconds: float) -> bool:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        key = _KEY_PREFIX + _digest(namespace, value)
        try:
            # NX: set only if absent, in one atomic command; PX: gone after the lifetime.
            stored = await self._redis.set(key, b"1", nx=True, px=max(1, int(ttl_seconds * 1000)))
        except (RedisError, OSError) as exc:
            raise OneTimeStoreUnavailable(f"one-time store: {type(exc).__name__}") from exc
        return bool(stored)

    async def close(self) -> None:
        await self._redis.aclose()


def one_time_values(settings: Settings) -> OneTimeValues:
    if settings.redis_url is None:
        return MemoryOneTimeValues()
    return RedisOneTimeValues(settings.redis_url.get_secret_value())

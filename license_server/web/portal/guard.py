"""Key guessing on the customer page: a per-IP budget of keys that are not genuine.

ASVS 4.0.3 V11.1.4 / V2.2.1 (anti-automation): `[portal] guesses_per_hour` (10 by default)
keys that are unknown, forged or malformed per client IP in a moving hour, with `limits` on the
server's rate-limit storage (this process's memory, or Redis shared by every instance; see
web/rate_limit.py). Once spent, every key entry from that IP answers 429 with Retry-After,
genuine keys included: letting a genuine key through after the limit would tell a guesser
which of its later guesses hit. Each guess also spends the verify endpoints'
`unknown-key-per-ip` budget of the address (one storage call), so that switching between the
page and the API buys no extra guesses.

Failure mode, as for verification: if the storage is down the page allows the request and
logs it once (web/rate_limit.RateLimiter); the attempt log still records every guess.
"""

from __future__ import annotations

import logging
import math
import time

import limits

from license_server.web.rate_limit import InMemoryMovingWindow, moving_window

log = logging.getLogger(__name__)

NAMESPACE = "portal-guesses"


class GuessGuard:
    def __init__(self, storage_uri: str, per_hour: int) -> None:
        self._limiter = moving_window(storage_uri)
        self._item = limits.RateLimitItemPerHour(per_hour)
        self._failing = False

    async def retry_after(self, source_ip: str) -> int | None:
        """Seconds until this IP may enter a key again, or None if it may now."""
        return await self._ask(self._limiter.test, source_ip)

    async def guessed(self, source_ip: str) -> int | None:
        """Spend one guess; seconds to wait if that was one too many (concurrent guesses that
        all passed `retry_after`), else None."""
        return await self._ask(self._limiter.hit, source_ip)

    async def _ask(self, allowed, source_ip: str) -> int | None:
        try:
            if await allowed(self._item, NAMESPACE, source_ip):
                self._recovered()
                return None
            return await self._wait(source_ip)
        except Exception as exc:
            self._failed(exc)
            return None

    async def _wait(self, source_ip: str) -> int:
        stats = await self._limiter.get_window_stats(self._item, NAMESPACE, source_ip)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "customer page: rate-limit storage failed (%s); key guesses are not limited "
                "until it works again",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("customer page: rate-limit storage works again")

    def close(self) -> None:
        if isinstance(self._limiter, InMemoryMovingWindow):
            self._limiter.close()

"""Holding every rate limit's refusal (429) for a moment before it is sent (anti-automation).

ASVS 4.0.3 V2.2.1 names "ever increasing delays between attempts" among the anti-automation
controls against credential guessing; V11.1.4 asks that a business flow not be open to
excessive calls. The limits already refuse: the admin's sign-in throttle (5 per minute per
address and per account), the customer page's guess limit, verification's per-IP, per-key
and key-guessing limits (both endpoints), the vendor API's. The answer middleware, which
every answer passes, holds each 429 (web/middlewares.py): every refusal is slow to get,
today's limits' and any added later. A client that does not wait as Retry-After asks (a
script guessing passwords or keys, a module retrying in a loop) is slowed to one refusal per
connection per `seconds`, whatever it sends.

Why (bench/login_storm.py, with `--hold 0` for the server without it): a script posting
wrong passwords from one address as fast as the server answers got 4,751 refusals a second,
each answered at once on the event loop that also answers the license checks, and took
verification to 15% of its throughput (p99 11.7x quiet); one guessing license keys on verify
got 1,478 refusals a second, each signed and logged like a check, and took it to 59% (p99
2.04x), writing 1,478 attempt rows a second. Held, each storm got 15 refusals a second on its
16 connections, and verification kept its quiet throughput and p99 (0.97x and 1.05x). A
person or a module that was refused waits a second more for an answer that asks them to wait
a minute or more; a request within its limits never comes here.

At most `capacity` refusals are held at once (each is a sleeping handler and an open
connection); past that a refusal is sent at once, as before, so holding never costs more
than a bounded number of connections (the metrics count the refusals sent at once). A storm
over more connections than that is for a per-address connection limit in the proxy in front
(bench/README.md, `bench/login_storm.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Tarpit:
    def __init__(
        self,
        seconds: float,
        capacity: int,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.seconds = seconds
        self.capacity = capacity
        self._sleep = sleep  # a test's stand-in: tests never wait on the clock
        self.holding = 0  # refusals being held right now
        self.held = 0  # refusals held so far
        self.sent_at_once = 0  # refusals sent without a hold because the tarpit was full

    async def hold(self) -> bool:
        """Wait `seconds` before a refusal is sent, if fewer than `capacity` are waiting;
        True if it waited."""
        if self.seconds <= 0:
            return False
        if self.holding >= self.capacity:
            self.sent_at_once += 1
            return False
        self.holding += 1
        try:
            await self._sleep(self.seconds)
        finally:
            self.holding -= 1
        self.held += 1
        return True

"""Holding a throttled guess's refusal for a moment before it is sent (anti-automation).

ASVS 4.0.3 V2.2.1 names "ever increasing delays between attempts" among the anti-automation
controls against credential guessing; V11.1.4 asks that a business flow not be open to
excessive calls. The sign-in throttle (5 per minute per address and per account) and the
customer page's guess limit already refuse a guesser: this makes each refusal slow to get.

Why (bench/login_storm.py, "storm, one IP"): a script that posts wrong passwords from one
address as fast as the server answers got about 4,700 refusals a second, each answered at
once on the event loop that also answers the license checks, and took verification from
5,253 to 638 checks a second. Holding each refusal for `seconds` before it is sent limits
such a client to one refusal per connection per `seconds` (with it, the same storm on 16
connections got 14.7 refusals a second, and verification kept 90% of its throughput, p99 at
1.27x quiet); a browser user who was refused waits a second more for a page that asks them to
wait a minute or more.

At most `capacity` refusals are held at once (each is a sleeping handler and an open
connection); past that a refusal is sent at once, as before, so holding never costs more
than a bounded number of connections (the metrics count the refusals sent at once). A storm
over more connections than that is for a per-address connection limit in the proxy in front
(bench/README.md, `bench/login_storm.py`).
Verification's own 429s are not held: modules behind one shared address must get their
answer at once, and those 429s cost a fraction of a page's.
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

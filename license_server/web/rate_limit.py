"""Rate limits on the verification endpoints, with `limits`' moving window.

Three policies (DESIGN.md, seed 000 "rate limits per endpoint class", ASVS 4.0.3 V11.1.4):
`per-ip` on every request, `per-key` per license key, and a stricter `unknown-key-per-ip` that
only unknown or forged keys consume, so key guessing is cut off long before a busy customer
behind one IP notices anything. Storage is `memory://` for one process or
`async+redis://` shared by several.

Failure mode, chosen on purpose: if the storage (Redis) is down, requests are allowed and the
error is logged. Failing closed would refuse every module's check, pushing every customer into
grace mode because of an outage of an auxiliary store; the attempt log still records everything.

`NoRateLimiter` is what `rate_limit.enabled = false` gives (benchmarks, trusted set-ups).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import limits
import redis.asyncio
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from license_server.settings import RateLimitSettings

log = logging.getLogger(__name__)

PER_IP = "per-ip"
PER_KEY = "per-key"
UNKNOWN_KEY_PER_IP = "unknown-key-per-ip"
# The vendor API (web/api/): per API key, whatever address it calls from.
PER_API_KEY = "per-api-key"
# Decisions that spend the unknown-key budget (a missing key on the WHMCS endpoint too).
GUESSING_REASONS = frozenset({"unknown_key", "bad_signature", "missing_key"})


@dataclass(frozen=True, slots=True)
class Limited:
    """A refused request: what to put in Retry-After and the RateLimit-* fields."""

    policy: str
    quota: int
    window_seconds: int
    retry_after: int


def moving_window(
    storage_uri: str,
) -> InMemoryMovingWindow | BatchedRedisMovingWindow | MovingWindowRateLimiter:
    """A moving-window limiter on the configured store: this process's memory, or Redis
    (shared by every instance; concurrent hits batched into one call, but on a cluster).
    Every limiter of the server is made here (verify, sign-in)."""
    if storage_uri.startswith("memory://"):
        return InMemoryMovingWindow()
    uri = storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"
    # Redis through redis-py's asyncio client, not limits' default (coredis): measured
    # 111 against 157 us of CPU per hit, and a check makes two (issue #16, workers).
    options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
    strategy = MovingWindowRateLimiter(storage_from_string(uri, **options))
    client = getattr(getattr(strategy.storage, "bridge", None), "storage", None)
    if isinstance(client, redis.asyncio.Redis):  # not a cluster: one script may touch any key
        return BatchedRedisMovingWindow(strategy, client)
    return strategy


# limits' moving window in Redis (acquire_moving_window.lua: a list per key, newest first,
# trimmed to the limit, expiring with the window), for many hits and tests in one call, each
# in order as if sent alone. ARGV: the time, then per operation its limit, expiry and 1 to
# consume (hit) or 0 to look (test); KEYS: each operation's key. Returns 1 (allowed) or 0.
_BATCH_SCRIPT = """
local now = tonumber(ARGV[1])
local results = {}
for i = 1, #KEYS do
    local limit = tonumber(ARGV[3 * i - 1])
    local expiry = tonumber(ARGV[3 * i])
    local entry = redis.call('lindex', KEYS[i], limit - 1)
    if entry and tonumber(entry) >= now - expiry then
        results[i] = 0
    else
        results[i] = 1
        if ARGV[3 * i + 1] == '1' then
            redis.call('lpush', KEYS[i], now)
            redis.call('ltrim', KEYS[i], 0, limit - 1)
            redis.call('expire', KEYS[i], expiry)
        end
    end
end
return results
"""


class BatchedRedisMovingWindow:
    """limits' moving window on Redis, with the hits and tests of concurrent checks sent
    together: one script call per batch instead of one round trip per hit.

    Each hit cost ~55-110 us of the server's CPU in redis-py (two per check), which made
    several workers cost twice the CPU per check of one (issue #16). Like the attempt log's
    group commit, a batch is whatever was asked while the previous call was out, with no fixed
    delay; one script runs the batch's operations in order, atomically, with the same data
    layout and rule as `limits`' own script, so instances on either code share counters. A
    failure fails every waiting operation with it (the caller's fail-open applies to each).
    Window statistics (only for a refusal) still go through `limits`.
    """

    MAX_BATCH = 500

    def __init__(self, strategy: MovingWindowRateLimiter, client: redis.asyncio.Redis) -> None:
        self._strategy = strategy
        self.storage = strategy.storage
        self._script = client.register_script(_BATCH_SCRIPT)
        self._waiting: list[tuple[str, int, int, bool, asyncio.Future[bool]]] = []
        self._sending = False
        self._sender: asyncio.Task[None] | None = None  # referenced while it runs

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return await self._ask(item, identifiers, True)

    async def test(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return await self._ask(item, identifiers, False)

    async def get_window_stats(self, item: limits.RateLimitItem, *identifiers: str):
        return await self._strategy.get_window_stats(item, *identifiers)

    async def _ask(self, item: limits.RateLimitItem, identifiers: tuple, consume: bool) -> bool:
        key = self.storage.bridge.prefixed_key(item.key_for(*identifiers))
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, item.amount, item.get_expiry(), consume, answer))
        if not self._sending:
            self._sending = True
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await answer

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.MAX_BATCH]
                del self._waiting[: self.MAX_BATCH]
                args: list[object] = [time.time()]
                for _, limit, expiry, consume, _ in batch:
                    args += (limit, expiry, 1 if consume else 0)
                try:
                    results = await self._script(keys=[op[0] for op in batch], args=args)
                except BaseException as exc:  # a cancelled send (shutdown) leaves none waiting
                    failure = exc if isinstance(exc, Exception) else RuntimeError("stopped")
                    for *_, answer in batch:
                        if not answer.done():
                            answer.set_exception(failure)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (*_, answer), allowed in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(bool(allowed))
        finally:
            self._sending = False


class RateLimiter:
    enabled = True

    def __init__(self, settings: RateLimitSettings) -> None:
        self.refused: Counter[str] = Counter()  # refusals per policy (the metrics read it)
        self._strategy = moving_window(settings.storage_uri)
        self._items = {
            PER_IP: limits.parse(settings.per_ip),
            PER_KEY: limits.parse(settings.per_key),
            UNKNOWN_KEY_PER_IP: limits.parse(settings.unknown_key_per_ip),
            PER_API_KEY: limits.parse(settings.per_api_key),
        }

    # The three stages of a check, the same for every verification endpoint.

    # Temporary IP blocks (`IpBlocks`, the automatic action `block_ip`): attached by the app
    # only when some detector's action is block_ip, so that otherwise a check pays nothing.
    _blocks: IpBlocks | None = None

    def honour_blocks(self, blocks: IpBlocks) -> None:
        self._blocks = blocks

    async def before_reading(self, source_ip: str) -> Limited | None:
        """A blocked address is refused first; every request counts per IP, before any work."""
        if self._blocks is not None:
            blocked = await self._blocks.blocked(source_ip, BLOCK_ALL)
            if blocked is not None:
                return blocked
        return await self.hit(PER_IP, source_ip)

    async def guessing_exhausted(self, source_ip: str) -> Limited | None:
        """An IP out of guesses is refused before its key is looked up, unless the key is
        known to be genuine (the caller asks only then): a genuine key on shared hosting is
        not collateral damage of a neighbour's guessing."""
        return await self.exhausted(UNKNOWN_KEY_PER_IP, source_ip)

    async def for_key(self, key_identity: Callable[[], str]) -> Limited | None:
        """Per license key (the identity is computed only when limiting is on)."""
        return await self.hit(PER_KEY, key_identity()) if self.enabled else None

    async def after_decision(self, reason: str, source_ip: str) -> Limited | None:
        """Guesses spend the unknown-key budget, and it is enforced here as well:
        concurrent guesses all passed `before_reading` before any of them was decided."""
        if reason in GUESSING_REASONS:
            return await self.hit(UNKNOWN_KEY_PER_IP, source_ip)
        return None

    async def hit(self, policy: str, identifier: str) -> Limited | None:
        """Consume one request; a `Limited` if the policy refuses it."""
        item = self._items[policy]
        try:
            allowed = await self._strategy.hit(item, policy, identifier)
        except Exception as exc:
            self._storage_failed(exc)
            return None
        if self._storage_failures:
            self._storage_recovered()
        return None if allowed else await self._limited(policy, identifier)

    async def exhausted(self, policy: str, identifier: str) -> Limited | None:
        """Test without consuming (is this IP already barred from guessing?)."""
        item = self._items[policy]
        try:
            allowed = await self._strategy.test(item, policy, identifier)
        except Exception as exc:
            self._storage_failed(exc)
            return None
        if self._storage_failures:
            self._storage_recovered()
        return None if allowed else await self._limited(policy, identifier)

    # An outage is logged once, not per request: a traceback per check would flood the log at
    # the very moment an operator needs to read it. Failures during an outage are counted.
    _storage_failures = 0

    def _storage_failed(self, exc: Exception) -> None:
        self._storage_failures += 1
        if self._storage_failures == 1:
            cause = " ".join(str(exc).split())[:300] or "no message"
            log.warning(
                "rate-limit storage failed (%s: %s); allowing requests unlimited (fail-open) "
                "until it works again",
                type(exc).__name__,
                cause,
            )

    def _storage_recovered(self) -> None:
        log.warning(
            "rate-limit storage works again after %d failed calls; limits apply again",
            self._storage_failures,
        )
        self._storage_failures = 0

    async def _limited(self, policy: str, identifier: str) -> Limited:
        self.refused[policy] += 1
        item = self._items[policy]
        try:
            stats = await self._strategy.get_window_stats(item, policy, identifier)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:
            retry_after = item.get_expiry()
        return Limited(policy, item.amount, item.get_expiry(), retry_after)

    async def ping(self) -> bool:
        return bool(await self._strategy.storage.check())

    def close(self) -> None:
        if isinstance(self._strategy, InMemoryMovingWindow):
            self._strategy.close()


class InMemoryMovingWindow:
    """A moving window in this process's memory, behind the async API of `limits`' strategies
    (`hit`, `test`, `get_window_stats`): one process only, as memory:// always was.

    The same rule as `limits`' moving window: a hit is allowed while fewer than `amount` hits
    fall within the last `expiry` seconds. Its in-memory storage kept a list per key and
    inserted every hit at the front (a copy of the whole window per hit), built a key string
    per call, took a lock, and needed an expiry thread; on the verify path (two hits a check)
    that was ~5% of the event loop's time (issue #16). Here each key is a deque of hit times,
    oldest first, never longer than its limit (a refused hit is not stored); idle keys are
    dropped from the front of a least-recently-used order as they go by, on the loop: no
    thread, no lock, no scan. Memory: the keys active within the longest window (plus at most
    `SWEEP_SECONDS`: the idle keys are looked for once that often, not on every hit).
    """

    SWEEP_SECONDS = 1.0

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        # Per window length, key -> hit times, least recently used first: within one length
        # the front key is the one whose window ends first.
        self._windows: dict[int, OrderedDict[tuple, deque[float]]] = {}
        self._next_sweep = 0.0
        self.storage = self

    def _window(self, item: limits.RateLimitItem, identifiers: tuple[str, ...], now: float):
        if now >= self._next_sweep:  # first: the key in hand must stay filed
            self._next_sweep = now + self.SWEEP_SECONDS
            self._drop_idle(now)
        expiry = item.get_expiry()
        windows = self._windows.get(expiry)
        if windows is None:
            windows = self._windows[expiry] = OrderedDict()
        key = (item.amount, identifiers)
        hits = windows.get(key)
        if hits is None:
            hits = windows[key] = deque(maxlen=item.amount)
        else:
            windows.move_to_end(key)
        cutoff = now - expiry
        while hits and hits[0] < cutoff:
            hits.popleft()
        return hits

    def _drop_idle(self, now: float) -> None:
        for expiry, windows in self._windows.items():
            cutoff = now - expiry
            while windows:
                key = next(iter(windows))
                hits = windows[key]
                if hits and hits[-1] >= cutoff:
                    break  # the least recently used key of this length is still in its window
                del windows[key]

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        now = self._clock()
        hits = self._window(item, identifiers, now)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    async def test(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return len(self._window(item, identifiers, self._clock())) < item.amount

    async def get_window_stats(self, item: limits.RateLimitItem, *identifiers: str):
        now = self._clock()
        hits = self._window(item, identifiers, now)
        reset = (hits[0] if hits else now) + item.get_expiry()
        return limits.WindowStats(reset, max(0, item.amount - len(hits)))

    async def check(self) -> bool:
        return True

    def reset(self) -> None:
        """Forget every window (as `limits`' storages' `reset`)."""
        self._windows.clear()

    def close(self) -> None:
        pass


class NoRateLimiter(RateLimiter):
    enabled = False

    def __init__(self) -> None:  # no storage at all
        self.refused: Counter[str] = Counter()

    async def hit(self, policy: str, identifier: str) -> Limited | None:
        return None

    async def exhausted(self, policy: str, identifier: str) -> Limited | None:
        return None

    async def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


# -- temporary IP blocks ---------------------------------------------------------------------

IP_BLOCK = "ip-block"
BLOCK_ALL = "all"  # verification and the admin sign-in
BLOCK_SIGN_IN = "sign-in"  # the admin sign-in only (repeated sign-in failures)


def block_identities(ip: str) -> tuple[str, ...]:
    """What a block on `ip` may have been placed on: the address, its /24 (IPv4), its /64 and
    /48 (IPv6). An address that does not parse has none (it cannot have been blocked)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ()
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 4:
        return (str(address), str(ipaddress.ip_network(f"{address}/24", strict=False)))
    return (
        str(address),
        str(ipaddress.ip_network(f"{address}/64", strict=False)),
        str(ipaddress.ip_network(f"{address}/48", strict=False)),
    )


def block_target(text: str) -> str | None:
    """An address, or a network of exactly the sizes `block_identities` looks at (IPv4 /24,
    IPv6 /64 or /48), canonical; None for anything else (a detector's evidence never blocks
    a range wider than a /24 or a /48, nor a malformed value)."""
    try:
        if "/" not in text:
            address = ipaddress.ip_address(text)
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            return str(address)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    allowed = (24,) if network.version == 4 else (48, 64)
    return str(network) if network.prefixlen in allowed else None


class IpBlocks:
    """Temporary blocks of an address or network, in the rate-limit store: this process's
    memory, or Redis shared by every instance (so one instance's block holds on all of them).

    A block is one hit on a "1 per N minutes" moving window keyed by scope and target: while
    it lasts the window is full, so `test` fails; it lifts itself when the window moves on,
    with nothing to clean up. Scopes: `all` (verification and the admin sign-in: the `block_ip`
    automatic action) and `sign-in` (the admin sign-in only: repeated sign-in failures, seed
    003's "brute force -> IP block"). ASVS 4.0.3 V2.2.1 (anti-automation), V11.1.4.

    Failure mode, as the rate limiter's: when the store is down, nothing is blocked (and it is
    logged by the limiter); a block is a defence in depth, not the only one."""

    def __init__(self, storage_uri: str, minutes: dict[str, int]) -> None:
        self._strategy = moving_window(storage_uri)
        self._items = {
            scope: limits.RateLimitItemPerMinute(1, max(1, n)) for scope, n in minutes.items()
        }

    async def block(self, target: str, scope: str) -> bool:
        """Block `target` (an address or network, `block_target`'s canonical form) for the
        scope's minutes; False when it was blocked already (the block is not lengthened)."""
        return bool(await self._strategy.hit(self._items[scope], IP_BLOCK, scope, target))

    async def blocked(self, ip: str, scope: str) -> Limited | None:
        """A `Limited` (with the seconds left) when `ip` is blocked in `scope` or, for the
        sign-in, in `all`; None otherwise, or when the store fails."""
        scopes = (scope, BLOCK_ALL) if scope != BLOCK_ALL else (BLOCK_ALL,)
        try:
            for name in scopes:
                item = self._items.get(name)
                if item is None:
                    continue
                for target in block_identities(ip):
                    if not await self._strategy.test(item, IP_BLOCK, name, target):
                        stats = await self._strategy.get_window_stats(item, IP_BLOCK, name, target)
                        wait = max(1, math.ceil(stats.reset_time - time.time()))
                        return Limited(IP_BLOCK, 0, item.get_expiry(), wait)
        except Exception:
            log.exception("IP block storage failed; not blocking")
        return None

    def close(self) -> None:
        if isinstance(self._strategy, InMemoryMovingWindow):
            self._strategy.close()


def limited_headers(limited: Limited) -> dict[str, str]:
    """Retry-After plus the structured fields of the IETF RateLimit header draft."""
    return {
        "Retry-After": str(limited.retry_after),
        "RateLimit-Policy": f'"{limited.policy}";q={limited.quota};w={limited.window_seconds}',
        "RateLimit": f'"{limited.policy}";r=0;t={limited.retry_after}',
    }

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

import ipaddress
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import limits
import limits.storage
import limits.strategies
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


def moving_window(storage_uri: str) -> InMemoryMovingWindow | MovingWindowRateLimiter:
    """A moving-window limiter on the configured store: this process's memory, or Redis
    (shared by every instance). Every limiter of the server is made here (verify, sign-in)."""
    if storage_uri.startswith("memory://"):
        return InMemoryMovingWindow()
    uri = storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"
    # Redis through redis-py's asyncio client, not limits' default (coredis): measured
    # 111 against 157 us of CPU per hit, and a check makes two (issue #16, workers).
    options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
    return MovingWindowRateLimiter(storage_from_string(uri, **options))


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


class _QuietMemoryStorage(limits.storage.MemoryStorage):
    """limits' MemoryStorage with one long-lived expiry thread instead of a new timer thread
    every 10 ms (starting a thread waits for it to run: measurable per request under load).
    Expiry only bounds memory: the moving window's decision never depends on it. It runs off
    the event loop, under limits' per-key locks, as limits' own timer does."""

    EXPIRE_EVERY = 1.0  # seconds

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        self._expirer = threading.Thread(
            target=self._expire_forever, name="rate-limit-expiry", daemon=True
        )
        self._expirer.start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # limits' private hook (pinned)
        pass

    def _expire_forever(self) -> None:
        while not self._stop.wait(self.EXPIRE_EVERY):
            self._MemoryStorage__expire_events()

    def close(self) -> None:
        self._stop.set()


class InMemoryMovingWindow:
    """`limits`' moving window on its synchronous in-memory storage, behind the async API.

    `limits`' async MemoryStorage starts an expiry task after a hit that hops to a worker
    thread (asyncio.to_thread) for every key: on the verify path that is a thread hop per
    request, measured as the largest part of rate limiting's cost (issue #16). The
    synchronous storage keeps the same window in plain dicts and never blocks (no I/O).
    One process only, as memory:// always was.
    """

    def __init__(self) -> None:
        self._memory = _QuietMemoryStorage()
        self._sync = limits.strategies.MovingWindowRateLimiter(self._memory)
        self.storage = self

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return self._sync.hit(item, *identifiers)

    async def test(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return self._sync.test(item, *identifiers)

    async def get_window_stats(self, item: limits.RateLimitItem, *identifiers: str):
        return self._sync.get_window_stats(item, *identifiers)

    async def check(self) -> bool:
        return True

    def close(self) -> None:
        self._memory.close()


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

"""Runs a phone-home check: key, license, decision, first-use binding, local key.

The hot path reads only memory after the first check of a key, but for one shared read of
the change log's newest seq: the offline key check is cached per key text (a genuine
signature stays genuine; a refusal is remembered too, until the keyring changes), the license
per key hash for `cache_seconds`, and a minted local key per license revision and binding for
a minute. A cached license is dropped as soon as the change feed says it changed, whichever
process changed it (licensing/changes.py), so a revocation is answered on the next check.
Only a first use (binding, activation) writes: the verifier decides, the service applies it
in one transaction that re-reads and re-decides through the verifier's callback, so two
simultaneous first checks cannot both take the last seat.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from license_server.crypto.answers import sign_local_key
from license_server.licensing.actors import MODULE, Actor
from license_server.licensing.bans import BanList
from license_server.licensing.caches import TtlCache
from license_server.licensing.changes import Change
from license_server.licensing.decision import (
    Answer,
    Bind,
    Facts,
    Verdict,
    decide,
    decide_domain,
    refused,
)
from license_server.licensing.domains import DevHostPatterns
from license_server.licensing.license_keys import KeyRejected, UnknownKeyHint
from license_server.licensing.models import License, Product, Status
from license_server.licensing.service import (
    KEY_HASH_PURPOSE,
    FirstUse,
    KeyLookup,
    LicenseService,
    NewBinding,
)

LOCAL_KEY_REUSE_SECONDS = 60
_PARSED_KEYS = 100_000
# Refused keys remembered: enough for the forged keys that cracked installs keep sending; a
# flood of distinct forgeries only evicts older ones (each costs one verification, as before).
_REFUSED_KEYS = 10_000
# Verdicts kept per license object, facts and ban (oldest dropped first).
_VERDICTS = 10_000


class RawBinding(NamedTuple):
    """Bindings exactly as the module sent them (echoed verbatim to WHMCS clients)."""

    domain: str
    ip: str
    directory: str


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """A presented key after the offline checks, computed once per key text and remembered:
    everything a request needs before the database (rate-limit identity, lookup hash)."""

    rate_limit_id: str  # one identity per key however it is spelt (case, O/0, I/L/1)
    key_hash: bytes  # lookup hash (logged for unknown or refused keys)
    rejected_reason: str | None  # set when refused offline (forged or malformed signed key)
    lookup: KeyLookup | None  # what to look up; None when refused
    text: str = ""  # the key as presented
    # Refused because no known signing key has its key hint: it may be one another process
    # has just added (`check` reloads the keyring once before refusing).
    unknown_hint: bool = False


class Outcome(NamedTuple):
    """A decided check (a named tuple: one per check, see `Facts`)."""

    verdict: Verdict
    license: License | None
    key_hash: bytes  # lookup hash of the presented key (logged for unknown keys)


class Verifier:
    def __init__(
        self,
        service: LicenseService,
        bans: BanList,
        *,
        issuer: str,
        dev_patterns: tuple[str, ...],
        cache_seconds: float,
        cache_size: int,
    ) -> None:
        self.service = service
        self.bans = bans
        self.issuer = issuer
        # Compiled once here, not per check (fnmatch translated each pattern on every call).
        self.dev_patterns = DevHostPatterns(dev_patterns)
        self._accepted: TtlCache[str, KeyCheck] = TtlCache(float("inf"), _PARSED_KEYS)
        self._refused: TtlCache[str, KeyCheck] = TtlCache(float("inf"), _REFUSED_KEYS)
        # Filed by license id as well: forgetting one license must not scan the cache.
        self._licenses: TtlCache[bytes, License] = TtlCache(
            cache_seconds, cache_size, tag=lambda license: license.id
        )
        self._forgets = 0  # a license read that raced a forget is not cached (it may be stale)
        self._loading: dict[bytes, tuple[int, asyncio.Future[License | None]]] = {}
        self._local_keys: TtlCache[tuple, str] = TtlCache(LOCAL_KEY_REUSE_SECONDS, cache_size)
        self._whmcs_secrets: TtlCache[int, str] = TtlCache(cache_seconds, 10_000)
        self._verdicts: dict[tuple, tuple[License, Verdict]] = {}
        service.feed.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.license_id is not None:
            self.forget(change.license_id)
        elif change.all_licenses:
            self.forget(None)

    def forget(self, license_id: int | None) -> None:
        """Drop a changed license from the cache; None (a product changed) drops them all."""
        self._forgets += 1
        if license_id is None:
            self._licenses.clear()
            self._whmcs_secrets.clear()
            return
        self._licenses.discard_tag(license_id)

    def cache_stats(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) of the license and local-key caches since start (for the metrics)."""
        return {
            "license": (self._licenses.hits, self._licenses.misses),
            "local_key": (self._local_keys.hits, self._local_keys.misses),
        }

    def forget_refusals(self) -> None:
        """Forget remembered refusals: call when the keyring changes (a key whose hint was
        unknown may be genuine under the new keyring)."""
        self._refused.clear()

    def lookup(self, key_text: str) -> KeyCheck:
        """The offline checks of a key, done once per key text (refusals included)."""
        check = self._accepted.get(key_text) or self._refused.get(key_text)
        if check is None:
            check = self._check_offline(key_text)
            cache = self._refused if check.rejected_reason else self._accepted
            cache.put(key_text, check)
        return check

    def _check_offline(self, key_text: str) -> KeyCheck:
        hasher = self.service.hasher
        try:
            lookup = self.service.lookup_for(key_text)
        except KeyRejected as exc:
            return KeyCheck(
                rate_limit_id=hasher.hash("rate-limit", key_text.strip().upper()).hex(),
                key_hash=hasher.hash(KEY_HASH_PURPOSE, key_text.strip()),
                rejected_reason="bad_signature",
                lookup=None,
                text=key_text,
                unknown_hint=isinstance(exc, UnknownKeyHint),
            )
        return KeyCheck(
            rate_limit_id=hasher.hash("rate-limit", lookup.canonical).hex(),
            key_hash=lookup.key_hash,
            rejected_reason=None,
            lookup=lookup,
            text=key_text,
        )

    async def check(
        self,
        key: str | KeyCheck,
        facts: Facts,
        raw: RawBinding,
        *,
        bind_ip_and_dir: bool = False,
    ) -> Outcome:
        """Decide a check; `key` is the key text or its `lookup()` (computed once per request)."""
        key_check = self.lookup(key) if isinstance(key, str) else key
        if key_check.lookup is None and key_check.unknown_hint:
            # Maybe signed by a key another process has just activated: look once (shared,
            # throttled; a change of keys forgets remembered refusals), then decide again.
            # Forged keys cost at most that one look.
            await self.service.keyring.refresh()
            key_check = self.lookup(key_check.text)
        if key_check.lookup is None:
            return Outcome(refused(key_check.rejected_reason), None, key_check.key_hash)
        # Whatever any process committed before this check arrived drops what it made stale.
        await self.service.feed.catch_up()
        license = await self._license(key_check.lookup)
        if license is None:
            return Outcome(refused("unknown_key"), None, key_check.key_hash)
        verdict = await self._decide(license, facts)
        if verdict.bind is not Bind.NONE or (
            verdict.answer is Answer.ACTIVE and license.status is Status.PENDING
        ):
            license, verdict = await self._first_use(license, facts, raw, bind_ip_and_dir)
        return Outcome(verdict, license, key_check.key_hash)

    def is_known_genuine(self, key: KeyCheck) -> bool:
        """Not a guess: a signed key whose signature verifies, or the key of a license this
        process has found recently (legacy keys carry no signature). Memory only."""
        lookup = key.lookup
        if lookup is None:
            return False
        return lookup.signed is not None or self._licenses.get(lookup.key_hash) is not None

    async def _license(self, lookup: KeyLookup) -> License | None:
        license = self._licenses.get(lookup.key_hash)
        if license is not None:
            return license
        # Single flight: the checks of one key that miss the cache together share one read
        # (issue #16 saw 33 re-reads of one key in 8 s) - unless a license was forgotten since
        # that read began: it may predate the change, so a later check reads afresh.
        pending = self._loading.get(lookup.key_hash)
        if pending is not None and pending[0] == self._forgets:
            try:
                return await asyncio.shield(pending[1])
            except asyncio.CancelledError:
                if not pending[1].cancelled():
                    raise  # this check itself was cancelled
                # The reading check was cancelled (a shutdown): read here instead.
        forgets = self._forgets
        future: asyncio.Future[License | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no waiter: fine
        self._loading[lookup.key_hash] = (forgets, future)
        try:
            license = await self.service.license_by_lookup(lookup)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            raise
        finally:
            if self._loading.get(lookup.key_hash, (0, None))[1] is future:
                del self._loading[lookup.key_hash]
        future.set_result(license)
        if license is not None and forgets == self._forgets:
            self._licenses.put(lookup.key_hash, license)
        return license

    async def _decide(self, license: License, facts: Facts) -> Verdict:
        banned = await self.bans.is_banned(facts.domain, facts.ip)
        now = self.service.now()
        # `decide` is pure: for the same license object (a changed license is a new one),
        # facts and ban, its verdict changes only when the license expires. A verdict that
        # binds is not kept (the first use re-reads and re-decides anyway).
        expired = license.expires_at is not None and license.expires_at <= now
        key = (license.id, facts, banned, expired)
        kept = self._verdicts.get(key)
        if kept is not None and kept[0] is license:
            return kept[1]
        verdict = decide(license, facts, now=now, dev_patterns=self.dev_patterns, banned=banned)
        if verdict.bind is Bind.NONE:
            if len(self._verdicts) >= _VERDICTS and key not in self._verdicts:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[key] = (license, verdict)
        return verdict

    async def _first_use(
        self, license: License, facts: Facts, raw: RawBinding, bind_ip_and_dir: bool
    ) -> tuple[License, Verdict]:
        """Ask the service to bind and/or activate, deciding again on fresh data."""

        async def decide_again(fresh: License) -> FirstUse:
            verdict = await self._decide(fresh, facts)
            if verdict.answer is not Answer.ACTIVE or verdict.bind is Bind.NONE:
                return FirstUse(verdict)
            return FirstUse(verdict, _bindings(fresh, facts, raw, verdict.bind, bind_ip_and_dir))

        updated, verdict = await self.service.first_use(license.id, decide_again, actor=MODULE)
        return updated or license, verdict

    async def activate_domain(
        self, license_id: int, domain: str, *, actor: Actor
    ) -> tuple[License | None, Verdict]:
        """Bind `domain` (normalised) as a first check from it would (the customer page): the
        same seat and development-host rules and the same write (`service.first_use`, which
        decides again on the license as locked in its transaction, so two activations cannot
        both take the last seat). The IP and directory are not judged: they are the
        browser's, not the site's. A verdict without a binding (bound already, a product that
        does not check domains) writes nothing."""

        current = await self.service.license_by_id(license_id)
        verdict = await self._decide_domain(current, domain)
        if verdict.answer is not Answer.ACTIVE or verdict.bind is Bind.NONE:
            return current, verdict  # nothing to write

        async def decide_again(fresh: License) -> FirstUse:
            verdict = await self._decide_domain(fresh, domain)
            if verdict.answer is not Answer.ACTIVE or verdict.bind is Bind.NONE:
                return FirstUse(verdict)
            return FirstUse(
                verdict, (NewBinding("domain", domain, domain, verdict.bind is Bind.DEV),)
            )

        return await self.service.first_use(license_id, decide_again, actor=actor)

    async def _decide_domain(self, license: License, domain: str) -> Verdict:
        return decide_domain(
            license, domain, now=self.service.now(), dev_patterns=self.dev_patterns,
            banned=await self.bans.is_banned(domain, ""),
        )  # fmt: skip

    async def whmcs_secret(self, product: Product) -> str | None:
        """The product's md5hash secret, decrypted once per cache period, not per check."""
        if not product.has_whmcs_secret:
            return None
        secret = self._whmcs_secrets.get(product.id)
        if secret is None:
            secret = await self.service.whmcs_secret(product)
            if secret is not None:
                self._whmcs_secrets.put(product.id, secret)
        return secret

    def local_key(self, license: License, facts: Facts, key_text: str) -> str:
        """The signed token a module may cache and trust offline until `exp`."""
        return self.local_key_with(license, facts, license_key_hash(key_text))

    def local_key_with(self, license: License, facts: Facts, lkh: str) -> str:
        """`local_key` for a key known only by its `lkh` (the customer page keeps no key)."""
        cache_key = (license.id, license.revision, facts.domain, facts.ip, facts.directory, lkh)
        token = self._local_keys.get(cache_key)
        if token is None:
            token = sign_local_key(self.service.keyring, self._claims(license, facts, lkh))
            self._local_keys.put(cache_key, token)
        return token

    def _claims(self, license: License, facts: Facts, lkh: str) -> dict:
        product = license.product
        now = self.service.now()
        exp = now + product.local_key_days * 86400
        grace_until = exp + product.grace_days * 86400
        if license.expires_at is not None:
            # Neither the offline key nor its grace outlives the license itself.
            exp = min(exp, license.expires_at)
            grace_until = min(grace_until, license.expires_at)
        return {
            "iss": self.issuer,
            "sub": str(license.id),
            "aud": product.code,
            "iat": now,
            "exp": exp,
            "grace_until": grace_until,
            "status": "active",
            "domain": facts.domain,
            "ip": facts.ip,
            "directory": facts.directory,
            "lkh": lkh,
            "features": list(product.features),
            "product": product.code,
            "licensee": license.licensee_name,
        }


def _bindings(
    license: License, facts: Facts, raw: RawBinding, bind: Bind, bind_ip_and_dir: bool
) -> tuple[NewBinding, ...]:
    is_dev = bind is Bind.DEV
    bindings = [NewBinding("domain", facts.domain, raw.domain, is_dev)]
    # WHMCS-style licenses also pin the first IP and directory (the addon's behaviour);
    # the native protocol leaves those to explicit rules, as sites move between servers.
    # An allowed conflict means the product does not check that binding: nothing to pin.
    product = license.product
    if bind_ip_and_dir and not product.allow_ip_conflict and not license.bindings_of("ip"):
        # WHMCS: the caller's address when the module posted none.
        bindings.append(NewBinding("ip", facts.ip, raw.ip or facts.ip, is_dev))
    if (
        bind_ip_and_dir
        and facts.directory
        and not product.allow_directory_conflict
        and not license.bindings_of("directory")
    ):
        bindings.append(NewBinding("directory", facts.directory, raw.directory, is_dev))
    return tuple(bindings)


@functools.lru_cache(maxsize=16384)  # pure; the same keys check in over and over
def license_key_hash(key_text: str) -> str:
    """`lkh`: lets a module check that a cached local key belongs to its configured key."""
    digest = hashlib.sha256(key_text.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

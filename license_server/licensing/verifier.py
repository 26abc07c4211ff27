"""Runs a phone-home check: key, license, decision, first-use binding, local key.

The hot path reads only memory after the first check of a key: the offline key check is
cached per key text (a genuine signature stays genuine), the license per key hash for
`cache_seconds` (dropped at once when this process changes it), and a minted local key per
license revision and binding for a minute. Only a first use (binding, activation) writes, and
it re-reads and re-decides inside the write transaction, so two simultaneous first checks
cannot both take the last seat.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from license_server.crypto.answers import sign_local_key
from license_server.db import licenses as license_rows
from license_server.licensing.bans import BanList
from license_server.licensing.caches import TtlCache
from license_server.licensing.decision import Answer, Bind, Facts, Verdict, decide, refused
from license_server.licensing.domains import DevHostPatterns
from license_server.licensing.license_keys import KeyRejected, UnknownKeyHint
from license_server.licensing.lifecycle import Action, LicenseState, transition
from license_server.licensing.models import License, Product, Status
from license_server.licensing.service import KEY_HASH_PURPOSE, KeyLookup, LicenseService

LOCAL_KEY_REUSE_SECONDS = 60
_PARSED_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class RawBinding:
    """Bindings exactly as the module sent them (echoed verbatim to WHMCS clients)."""

    domain: str
    ip: str
    directory: str


@dataclass(frozen=True, slots=True)
class Outcome:
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
        self._lookups: TtlCache[str, KeyLookup] = TtlCache(float("inf"), _PARSED_KEYS)
        self._licenses: TtlCache[bytes, License] = TtlCache(cache_seconds, cache_size)
        self._local_keys: TtlCache[tuple, str] = TtlCache(LOCAL_KEY_REUSE_SECONDS, cache_size)
        self._whmcs_secrets: TtlCache[int, str] = TtlCache(cache_seconds, 10_000)
        service.change_listeners.append(self.forget)

    def forget(self, license_id: int | None) -> None:
        """Drop a changed license from the cache; None (a product changed) drops them all."""
        if license_id is None:
            self._licenses.clear()
            self._whmcs_secrets.clear()
            return
        self._licenses.discard_where(lambda _, license: license.id == license_id)

    async def check(
        self, key_text: str, facts: Facts, raw: RawBinding, *, bind_ip_and_dir: bool = False
    ) -> Outcome:
        try:
            lookup = await self._lookup_or_reload(key_text)
        except KeyRejected:
            key_hash = self.service.hasher.hash(KEY_HASH_PURPOSE, key_text.strip())
            return Outcome(refused("bad_signature"), None, key_hash)
        license = await self._license(lookup)
        if license is None:
            return Outcome(refused("unknown_key"), None, lookup.key_hash)
        verdict = await self._decide(license, facts)
        if verdict.bind is not Bind.NONE or (
            verdict.answer is Answer.ACTIVE and license.status is Status.PENDING
        ):
            license, verdict = await self._first_use(license, facts, raw, bind_ip_and_dir)
        return Outcome(verdict, license, lookup.key_hash)

    def rate_limit_id(self, key_text: str) -> str:
        """One identity per key however it is spelt (case, O/0, I/L/1), for per-key limits."""
        try:
            canonical = self._lookup(key_text).canonical
        except KeyRejected:
            canonical = key_text.strip().upper()
        return self.service.hasher.hash("rate-limit", canonical).hex()

    def is_known_genuine(self, key_text: str) -> bool:
        """Not a guess: a signed key whose signature verifies, or the key of a license this
        process has found recently (legacy keys carry no signature). Memory only."""
        try:
            lookup = self._lookup(key_text)
        except KeyRejected:
            return False
        return lookup.signed is not None or self._licenses.get(lookup.key_hash) is not None

    def _lookup(self, key_text: str) -> KeyLookup:
        lookup = self._lookups.get(key_text)
        if lookup is None:
            lookup = self.service.lookup_for(key_text)
            self._lookups.put(key_text, lookup)
        return lookup

    async def _lookup_or_reload(self, key_text: str) -> KeyLookup:
        try:
            return self._lookup(key_text)
        except UnknownKeyHint:
            # Maybe signed by a key another process has just activated: look once (shared,
            # throttled), then decide. Forged keys cost at most that one look.
            await self.service.keyring.refresh()
            return self._lookup(key_text)

    async def _license(self, lookup: KeyLookup) -> License | None:
        license = self._licenses.get(lookup.key_hash)
        if license is None:
            license = await self.service.license_by_lookup(lookup)
            if license is not None:
                self._licenses.put(lookup.key_hash, license)
        return license

    async def _decide(self, license: License, facts: Facts) -> Verdict:
        banned = await self.bans.is_banned(facts.domain, facts.ip)
        return decide(
            license,
            facts,
            now=self.service.now(),
            dev_patterns=self.dev_patterns,
            banned=banned,
        )

    async def _first_use(
        self, license: License, facts: Facts, raw: RawBinding, bind_ip_and_dir: bool
    ) -> tuple[License, Verdict]:
        """Bind and/or activate in one transaction, deciding again on fresh data."""
        service = self.service
        now = service.now()
        async with service.db.write() as conn:
            fresh = await service.load(conn, license.id)
            if fresh is None:
                return license, refused("unknown_key")
            verdict = await self._decide(fresh, facts)
            if verdict.answer is not Answer.ACTIVE:
                return fresh, verdict
            if verdict.bind is not Bind.NONE and fresh.product.free_trial:
                holders = await license_rows.other_holders_of_domain(
                    conn, fresh.product.id, facts.domain, fresh.id
                )
                if holders:
                    # A second free trial on a domain that already had one: suspended.
                    await self._set_status(conn, fresh, Status.SUSPENDED, now)
                    return fresh, Verdict(Answer.SUSPENDED, "trial_already_used")
            if verdict.bind is not Bind.NONE:
                await self._bind(conn, fresh, facts, raw, verdict.bind, bind_ip_and_dir, now)
            if fresh.status is Status.PENDING:
                state = LicenseState(fresh.status, fresh.expires_at, fresh.reissue_count, True)
                change = transition(state, Action.ACTIVATE, now=now)
                await self._set_status(conn, fresh, change.status, now)
            updated = await service.load(conn, fresh.id)
        service.changed(fresh.id)
        return updated or fresh, verdict

    @staticmethod
    async def _set_status(conn, license: License, status: Status, now: int) -> None:
        await license_rows.update_state(
            conn,
            license.id,
            status=status.value,
            expires_at=license.expires_at,
            reissue_count=license.reissue_count,
            now=now,
        )

    @staticmethod
    async def _bind(
        conn,
        license: License,
        facts: Facts,
        raw: RawBinding,
        bind: Bind,
        bind_ip_and_dir: bool,
        now: int,
    ) -> None:
        bindings = [("domain", facts.domain, raw.domain)]
        # WHMCS-style licenses also pin the first IP and directory (the addon's behaviour);
        # the native protocol leaves those to explicit rules, as sites move between servers.
        # An allowed conflict means the product does not check that binding: nothing to pin.
        product = license.product
        if bind_ip_and_dir and not product.allow_ip_conflict and not license.bindings_of("ip"):
            # WHMCS: the caller's address when the module posted none.
            bindings.append(("ip", facts.ip, raw.ip or facts.ip))
        if (
            bind_ip_and_dir
            and facts.directory
            and not product.allow_directory_conflict
            and not license.bindings_of("directory")
        ):
            bindings.append(("directory", facts.directory, raw.directory))
        for kind, value, raw_value in bindings:
            await license_rows.upsert_binding(
                conn,
                license.id,
                kind=kind,
                value=value,
                raw_value=raw_value,
                is_dev=bind is Bind.DEV,
                now=now,
            )

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
        lkh = license_key_hash(key_text)
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


def license_key_hash(key_text: str) -> str:
    """`lkh`: lets a module check that a cached local key belongs to its configured key."""
    digest = hashlib.sha256(key_text.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

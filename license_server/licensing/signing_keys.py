"""Signing-key management, one piece of code for `run.py` and the staff admin (issue #12).

The staged rollout itself (published -> active -> retired, the state file, its lock) is
`crypto/keystore.py`; when a key may be retired is `licensing/key_retirement.py`. This module is
what both front ends call: it lists the keys with the public halves a module author copies,
adds, activates and retires keys, writes an audit row for each change, and tells which client
versions still check in with licenses that an old key signed.

Key material (ASVS 4.0.3 V6.4.1, V7.1.1): a `KeyView` holds only public values (kid, PEM of the
public key, JWK, PHP snippet); the private key never leaves the key store, and no audit row, log
line or page receives it. Changes need `signing_key:*` permissions (staff/rbac.py), checked by
the caller's route and again in `staff/console.py`.

Several instances: the state lives in the keyring file of the shared `keys_dir`, as it always
did. The instance that makes a change reloads its keyring at once; the others notice the file
change within about a second (`KeyringReloader.run`), and re-read on demand before refusing a
license key signed by a key they do not know yet (tests/test_key_rotation.py).

Order of a change and its audit row: the key state is a file and the audit log a table, so no
transaction covers both. The file change is made inside the audit row's write transaction,
once (a retried transaction writes only the row again), so an audit row never claims a change
that did not happen, and a change whose audit row failed to commit is logged as an error.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from license_server.crypto.keystore import KeyRecord, KeyRefused, KeyStore, client_snippets
from license_server.crypto.signing import Keyring, SigningKey, keyring_from_pem
from license_server.db import key_usage as usage_rows
from license_server.licensing.actors import Actor
from license_server.licensing.key_retirement import refusal, signed_by
from license_server.licensing.service import LicenseService

log = logging.getLogger(__name__)

ENVIRONMENT = "LICENSE_SERVER_SIGNING_KEYS"
# An RFC 7638 thumbprint of SHA-256, base64url without padding: exactly 43 characters.
KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
# Which client versions check in with an old key's licenses: attempts of the last week, at
# most this many read (the newest licenses of the key first), at most this many versions shown.
USAGE_WINDOW_SECONDS = 7 * 86400
USAGE_SCAN_ROWS = 20_000
USAGE_VERSIONS = 20


class UnknownKey(KeyRefused):
    """No key with that kid (the web layer answers 404)."""


@dataclass(frozen=True, slots=True)
class KeyView:
    """One signing key as a person sees it; public values only."""

    kid: str
    state: str  # published | active | retired
    created: int | None  # Unix seconds; None for keys from the environment
    signing_from: int | None
    signing_until: int | None
    retired_at: int | None
    public_pem: str
    jwk: str  # the JWKS entry, as the Python client takes it
    php: str  # the PHP client's `public_keys` entry


@dataclass(frozen=True, slots=True)
class VersionSeen:
    client_version: str
    licenses: int
    attempts: int
    last_seen: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """Licenses an old key signed, and the client versions they recently checked in with."""

    licenses: int  # every license whose key it signed (revoked ones too)
    live_licenses: int  # of which not revoked
    versions: list[VersionSeen]
    sampled: bool  # the scan stopped at USAGE_SCAN_ROWS: counts are a lower bound


def validate_kid(kid: str) -> str:
    """A kid as the key store names keys, else `KeyRefused` (before anything is looked up)."""
    if not KID_PATTERN.fullmatch(kid):
        raise KeyRefused("not a signing key id (43 characters of A-Z, a-z, 0-9, '-', '_')")
    return kid


def _view(key: SigningKey, state: str, record: KeyRecord | None) -> KeyView:
    php, jwk = client_snippets(key)
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return KeyView(
        kid=key.kid,
        state=state,
        created=record.created if record else None,
        signing_from=record.signing_from if record else None,
        signing_until=record.signing_until if record else None,
        retired_at=record.retired_at if record else None,
        public_pem=pem,
        jwk=jwk,
        php=php,
    )


def environment_keys(env_pem: str) -> list[KeyView]:
    """Keys given in the environment: all published, the last one signs; no dates."""
    keyring = keyring_from_pem(env_pem)
    return [
        _view(key, "active" if key is keyring.active else "published", None) for key in keyring.keys
    ]


def stored_keys(store: KeyStore) -> list[KeyView]:
    """Every key of a key directory, oldest first (a first run creates the first key)."""
    store.load()
    state, keys = store.state()
    views = []
    for record in sorted(state.records.values(), key=lambda r: r.created_ns):
        key = keys.get(record.kid)
        if key is None:
            continue  # a rotation in progress: its file is not written yet
        views.append(_view(key, state.state_of(record.kid), record))
    return views


class SigningKeys:
    """The signing keys of one server: `store` is None when they come from the environment."""

    def __init__(
        self,
        service: LicenseService,
        store: KeyStore | None,
        keyring: Keyring,
        env_pem: str | None = None,
    ) -> None:
        self._service = service
        self._store = store
        self._keyring = keyring
        self._env_pem = env_pem

    @property
    def from_environment(self) -> bool:
        return self._store is None

    def _changeable(self, action: str) -> KeyStore:
        if self._store is None:
            raise KeyRefused(
                f"signing keys come from {ENVIRONMENT}; {action} there (the last signs)"
            )
        return self._store

    async def keys(self) -> list[KeyView]:
        if self._store is None:
            return environment_keys(self._env_pem or "")
        return await asyncio.to_thread(stored_keys, self._store)

    # -- changes ---------------------------------------------------------------------------

    async def add(self, actor: Actor) -> KeyView:
        """`rotate-keys`: a new key, published (in the JWKS, trusted) but not signing yet."""
        store = self._changeable("add the new key")
        key = await self._change(actor, "signing_key.add", store.rotate, lambda key: key.kid)
        return _view(key, "published", store.record(key.kid))

    async def activate(self, kid: str, actor: Actor) -> KeyRecord:
        """`rotate-keys --activate KID`: the published key signs from now on."""
        store = self._changeable("reorder the keys")
        validate_kid(kid)
        self._known(store, kid)
        return await self._change(
            actor, "signing_key.activate", lambda: store.activate(kid), lambda _: kid
        )

    async def retire(self, kid: str, actor: Actor) -> KeyRecord:
        """`retire KID`: stop publishing a key; refused, with the reason, while anything it
        signed may still be valid (licensing/key_retirement.py)."""
        store = self._changeable("remove the key there")
        validate_kid(kid)
        self._known(store, kid)  # an unknown kid is refused before anything is looked up
        evidence = await signed_by(self._service, kid)
        now = self._service.now()
        return await self._change(
            actor,
            "signing_key.retire",
            lambda: store.retire(kid, lambda record: refusal(evidence, record, now)),
            lambda _: kid,
        )

    @staticmethod
    def _known(store: KeyStore, kid: str) -> None:
        try:
            store.record(kid)
        except KeyRefused as exc:
            raise UnknownKey(str(exc)) from None

    async def _change(self, actor: Actor, action: str, change: Callable, kid_of: Callable):
        """Run the key-store `change` once, inside the transaction that audits it."""
        done: list = []

        async def work(writes) -> object:
            if not done:
                active_before = self._keyring.active.kid
                done.append(await asyncio.to_thread(change))
                done.append(active_before)
            result, active_before = done
            await self._service.audit.append(
                writes.conn, at=writes.now, actor=actor, action=action,
                target=f"signing_key:{kid_of(result)}",
                detail={"active_before": active_before},
            )  # fmt: skip
            return result

        try:
            result = await self._service.write(actor, work)
        except Exception:
            if done:
                log.error("signing key change %s by %s made, but its audit row failed", action,
                          actor)  # fmt: skip
            raise
        finally:
            if done:
                await self._reload()
        return result

    async def _reload(self) -> None:
        """This instance follows its own change at once (the others within a second)."""
        if self._store is None:
            return
        keys, active = await asyncio.to_thread(self._store.published)
        self._keyring.replace(keys, active)

    # -- which modules still use old keys ----------------------------------------------------

    async def usage(self, kids: list[str]) -> dict[str, KeyUsage]:
        """For each kid: licenses it signed, and the client versions they checked in with
        during the last week. Each key costs two bounded reads (indexes on
        licenses.signing_kid and verification_attempts (license_id, at_ms))."""
        since_ms = (self._service.now() - USAGE_WINDOW_SECONDS) * 1000
        found = {}
        async with self._service.db.read() as conn:
            for kid in kids:
                licenses, live = await usage_rows.licenses_signed_by(conn, kid)
                rows, scanned = await usage_rows.client_versions(
                    conn, kid, since_ms, USAGE_SCAN_ROWS, USAGE_VERSIONS
                )
                versions = [
                    VersionSeen(r["client_version"], int(r["licenses"]), int(r["attempts"]),
                                int(r["last_seen_ms"]) // 1000)
                    for r in rows
                ]  # fmt: skip
                found[kid] = KeyUsage(licenses, live, versions, scanned >= USAGE_SCAN_ROWS)
        return found

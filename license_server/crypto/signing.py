"""Ed25519 signing keys, the in-memory keyring, and the published JWKS.

Key ids are RFC 7638 JWK thumbprints (base64url SHA-256 of the canonical public JWK), so a kid
names exactly one public key and anyone can recompute it. The JWKS follows RFC 8037 (`kty` OKP,
`crv` Ed25519). The keyring holds every *published* key (all of them verify, all are in the
JWKS) and one *active* key that signs (ASVS 4.0.3 V6.2.1: vetted primitives; V6.4.2: keys can
be rotated). How keys are stored, rotated in stages and retired is `crypto/keystore.py`.
Containers may pass the keys in the environment (`LICENSE_SERVER_SIGNING_KEYS`: PEM blocks,
the last one active).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from license_server.crypto.keyfiles import KeyFileError, read_secret

log = logging.getLogger(__name__)

_PEM_BLOCK = re.compile(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", re.DOTALL)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(public_raw: bytes) -> str:
    """RFC 7638 thumbprint: members in lexicographic order, no whitespace."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw)}, separators=(",", ":")
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def kid_hint(kid: str) -> int:
    """The one-byte key hint that license keys signed by `kid` carry."""
    return b64url_decode(kid)[0]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    public_raw: bytes
    created_at: int

    @classmethod
    def from_private(cls, private_key: Ed25519PrivateKey, created_at: int) -> SigningKey:
        public_key = private_key.public_key()
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(jwk_thumbprint(raw), private_key, public_key, raw, created_at)

    @property
    def hint(self) -> int:
        """First byte of the thumbprint digest: a one-byte key hint for compact license keys."""
        return kid_hint(self.kid)

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.public_raw),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }


class Keyring:
    """The keys this process trusts (all published keys) and the one that signs.

    Held by the runtime, the license service, the verifier, the answer-signing middleware and
    the JWKS view, so it changes in place (`replace`) rather than being swapped for a new
    object: every holder sees a rotation at once. `generation` grows on every change, and
    listeners run after one (caches of refused keys drop what a new key may now accept).
    """

    def __init__(self, keys: list[SigningKey], active_kid: str | None = None) -> None:
        self.generation = 0
        self._listeners: list[Callable[[Keyring], None]] = []
        self._refresher: Callable[[], Awaitable[object]] | None = None
        self._set(keys, active_kid)

    def _set(self, keys: list[SigningKey], active_kid: str | None) -> None:
        if not keys:
            raise KeyFileError("no signing key available")
        ordered = sorted(keys, key=lambda k: k.created_at)
        by_kid = {k.kid: k for k in ordered}
        active = by_kid.get(active_kid) if active_kid else ordered[-1]
        if active is None:
            raise KeyFileError(f"the active signing key {active_kid} is not among the keys")
        by_hint: dict[int, list[SigningKey]] = {}
        for key in ordered:
            by_hint.setdefault(key.hint, []).append(key)
        # Built completely before being assigned, so no reader sees half of a change.
        self._keys, self._by_kid, self._by_hint, self._active = ordered, by_kid, by_hint, active
        self.jwks_body = json.dumps({"keys": [k.jwk() for k in reversed(ordered)]}).encode()

    def replace(self, keys: list[SigningKey], active_kid: str | None = None) -> bool:
        """Take new contents in place; True (and listeners called) if anything changed."""
        if [k.kid for k in sorted(keys, key=lambda k: k.created_at)] == [
            k.kid for k in self._keys
        ] and (active_kid or self._keys[-1].kid) == self._active.kid:
            return False
        self._set(keys, active_kid)
        self.generation += 1
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # one broken listener must not keep the others stale
                log.exception("keyring listener %r failed", listener)
        return True

    def add_listener(self, listener: Callable[[Keyring], None]) -> None:
        """Call `listener(keyring)` after every change of the keys or of the active key."""
        self._listeners.append(listener)

    def set_refresher(self, refresher: Callable[[], Awaitable[object]] | None) -> None:
        """How `refresh` looks for keys added by another process (None: it does nothing)."""
        self._refresher = refresher

    async def refresh(self) -> None:
        """Look once for key changes made elsewhere (single-flight and throttled by the
        refresher): called before refusing a license key whose signer no known key matches."""
        if self._refresher is not None:
            await self._refresher()

    @property
    def active(self) -> SigningKey:
        return self._active

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> SigningKey | None:
        return self._by_kid.get(kid)

    def with_hint(self, hint: int) -> list[SigningKey]:
        return self._by_hint.get(hint, [])

    def sign(self, data: bytes) -> tuple[str, bytes]:
        key = self._active
        return key.kid, key.private_key.sign(data)

    def verify(self, kid: str, data: bytes, signature: bytes) -> bool:
        key = self._by_kid.get(kid)
        return key is not None and verify_with(key.public_key, data, signature)


def verify_with(public_key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def generate_key(created_ns: int) -> tuple[SigningKey, bytes]:
    """A new Ed25519 key and its PKCS#8 PEM (unencrypted: the file's mode protects it)."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey.from_private(private_key, created_ns), pem


def keyring_from_pem(env_pem: str) -> Keyring:
    """`LICENSE_SERVER_SIGNING_KEYS`: PEM blocks, all published, the last one signs."""
    keys = keys_from_pem_blocks(env_pem.encode())
    return Keyring(keys, keys[-1].kid)


def load_key_file(path: Path) -> SigningKey:
    try:
        created = int(path.stem)
    except ValueError:
        raise KeyFileError(f"signing key file name {path.name} is not <nanoseconds>.pem") from None
    (key,) = keys_from_pem_blocks(read_secret(path), source=str(path), created=created)
    return key


def keys_from_pem_blocks(
    data: bytes, source: str = "LICENSE_SERVER_SIGNING_KEYS", created: int | None = None
) -> list[SigningKey]:
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise KeyFileError(f"{source}: no PEM private key found")
    keys = []
    for index, block in enumerate(blocks):
        try:
            private_key = serialization.load_pem_private_key(block, password=None)
        except ValueError:
            raise KeyFileError(f"{source}: PEM block {index + 1} is not a private key") from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyFileError(f"{source}: PEM block {index + 1} is not an Ed25519 key")
        keys.append(SigningKey.from_private(private_key, index if created is None else created))
    return keys

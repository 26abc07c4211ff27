"""Ed25519 signing keys: loading, first-run creation, rotation, and the published JWKS.

Key ids are RFC 7638 JWK thumbprints (base64url SHA-256 of the canonical public JWK), so a kid
names exactly one public key and anyone can recompute it. The JWKS follows RFC 8037 (`kty` OKP,
`crv` Ed25519). Every key the server ever signed with stays in the keyring and in the JWKS:
license keys are signed too and never expire, so a retired key must keep verifying them; only
the newest key signs new material (ASVS 4.0.3 V6.2.1: vetted primitives; V6.4.2: rotation).

Keys live in `<keys_dir>/signing/<created-ns>.pem` (PKCS#8, 0600); the newest file is active,
so rotation is one atomic file creation. Containers may pass the keys in the environment
instead (`LICENSE_SERVER_SIGNING_KEYS`: PEM blocks, the last one active).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from license_server.crypto.keyfiles import (
    KeyFileError,
    ensure_private_dir,
    read_secret,
    write_secret,
)

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
        return b64url_decode(self.kid)[0]

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
    """All signing keys the server knows; the newest signs, all of them verify."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise KeyFileError("no signing key available")
        self._keys = sorted(keys, key=lambda k: k.created_at)
        self._by_kid = {k.kid: k for k in self._keys}
        self._by_hint: dict[int, list[SigningKey]] = {}
        for key in self._keys:
            self._by_hint.setdefault(key.hint, []).append(key)
        self.jwks_body = json.dumps({"keys": [k.jwk() for k in reversed(self._keys)]}).encode()

    @property
    def active(self) -> SigningKey:
        return self._keys[-1]

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> SigningKey | None:
        return self._by_kid.get(kid)

    def with_hint(self, hint: int) -> list[SigningKey]:
        return self._by_hint.get(hint, [])

    def sign(self, data: bytes) -> tuple[str, bytes]:
        key = self.active
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


def load_keyring(keys_dir: Path, env_pem: str | None = None) -> Keyring:
    """Keys from the environment if given, else from `keys_dir`, creating one on first run."""
    if env_pem:
        return Keyring(_keys_from_pem_blocks(env_pem.encode()))
    directory = keys_dir / "signing"
    ensure_private_dir(directory)
    if not any(directory.glob("*.pem")):
        rotate_signing_key(keys_dir)
    return Keyring([_load_key_file(path) for path in sorted(directory.glob("*.pem"))])


def rotate_signing_key(keys_dir: Path) -> SigningKey:
    """Create a new active signing key; the older ones stay for verification and the JWKS."""
    directory = keys_dir / "signing"
    ensure_private_dir(directory)
    created = time.time_ns()
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(directory / f"{created}.pem", pem)
    return SigningKey.from_private(private_key, created)


def _load_key_file(path: Path) -> SigningKey:
    try:
        created = int(path.stem)
    except ValueError:
        raise KeyFileError(f"signing key file name {path.name} is not <nanoseconds>.pem") from None
    (key,) = _keys_from_pem_blocks(read_secret(path), source=str(path), created=created)
    return key


def _keys_from_pem_blocks(
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

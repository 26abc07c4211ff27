"""Field-level encryption (AES-256-GCM) and keyed lookup hashes (HMAC-SHA256).

One 32-byte data key (`<keys_dir>/data.key`, or `LICENSE_SERVER_DATA_KEY`) is expanded with
HKDF-SHA256 (RFC 5869) into independent sub-keys, one per purpose, so that the lookup hash never
shares a key with the cipher. Ciphertexts are bound to the place they are stored: the associated
data names the table and column, so a value copied into another column fails to decrypt
(ASVS 4.0.3 V6.2.1, V6.2.5; DESIGN.md "Keys are stored as a keyed hash plus an AES-GCM copy").

Stored format: version byte 1 | 12-byte random nonce | ciphertext with tag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from license_server.crypto.keyfiles import (
    KeyFileError,
    ensure_private_dir,
    read_secret,
    write_secret,
)

_VERSION = b"\x01"
DATA_KEY_FILE = "data.key"


class DecryptionError(Exception):
    """A stored ciphertext does not decrypt under this key and place (tampered or moved)."""


def _subkey(master: bytes, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"license-server/" + purpose
    ).derive(master)


class FieldCipher:
    def __init__(self, master: bytes) -> None:
        self._aead = AESGCM(_subkey(master, b"field-encryption"))

    def encrypt(self, table: str, column: str, plaintext: str) -> bytes:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), f"{table}.{column}".encode())
        return _VERSION + nonce + sealed

    def decrypt(self, table: str, column: str, blob: bytes) -> str:
        if len(blob) < 29 or blob[:1] != _VERSION:
            raise DecryptionError(f"{table}.{column}: not a ciphertext of this server")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], f"{table}.{column}".encode())
        except InvalidTag:
            raise DecryptionError(f"{table}.{column}: ciphertext does not verify") from None
        return plain.decode()


class LookupHasher:
    """HMAC-SHA256 under a server secret: an index for secrets without storing them."""

    def __init__(self, master: bytes) -> None:
        self._key = _subkey(master, b"lookup-hash")

    def hash(self, purpose: str, value: str) -> bytes:
        # The purpose separates domains: a license-key hash can never equal an API-key hash.
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def load_data_key(keys_dir: Path, env_value: str | None = None) -> bytes:
    """The 32-byte master data key from the environment or `keys_dir`, created on first run."""
    if env_value:
        return _decode_data_key(env_value.encode(), "LICENSE_SERVER_DATA_KEY")
    ensure_private_dir(keys_dir)
    path = keys_dir / DATA_KEY_FILE
    if not path.exists():
        write_secret(path, base64.b64encode(os.urandom(32)) + b"\n")
    return _decode_data_key(read_secret(path), str(path))


def _decode_data_key(raw: bytes, source: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{source}: must be the base64 of exactly 32 random bytes")
    return key

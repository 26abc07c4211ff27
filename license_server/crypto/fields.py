"""Field-level encryption (AES-256-GCM) and keyed lookup hashes (HMAC-SHA256).

One 32-byte data key (`<keys_dir>/data.key`, or `LICENSE_SERVER_DATA_KEY`) is expanded with
HKDF-SHA256 (RFC 5869) into independent sub-keys, one per purpose, so that the lookup hash never
shares a key with the cipher. Ciphertexts are bound to the place they are stored: the associated
data names the table and column, so a value copied into another column fails to decrypt
(ASVS 4.0.3 V6.2.1, V6.2.5; DESIGN.md "Keys are stored as a keyed hash plus an AES-GCM copy").
Personal data can be bound to its row as well (`row=`: a licensee's e-mail copied onto another
license fails to decrypt there; ASVS V6.1.1: regulated personal data encrypted at rest).

A blind index (`LookupHasher.blind_index`) makes encrypted personal data findable by exact value
without storing it: HMAC-SHA256, under its own HKDF sub-key, over the normalised value (ASVS
V6.2.x: a keyed construction, not a bare hash, so a copy of the database cannot be searched by
trying addresses without the server's key).

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

    def encrypt(self, table: str, column: str, plaintext: str, *, row: int | None = None) -> bytes:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _place(table, column, row))
        return _VERSION + nonce + sealed

    def decrypt(self, table: str, column: str, blob: bytes, *, row: int | None = None) -> str:
        """The plaintext; `row` must be the one given to `encrypt` (None for column-bound)."""
        blob = bytes(blob)  # PostgreSQL may hand back a memoryview
        if len(blob) < 29 or blob[:1] != _VERSION:
            raise DecryptionError(f"{table}.{column}: not a ciphertext of this server")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], _place(table, column, row))
        except InvalidTag:
            raise DecryptionError(f"{table}.{column}: ciphertext does not verify") from None
        return plain.decode()


def _place(table: str, column: str, row: int | None) -> bytes:
    """The associated data: where the ciphertext belongs (column, and row when bound to one)."""
    return f"{table}.{column}".encode() if row is None else f"{table}.{column}#{row}".encode()


class LookupHasher:
    """HMAC-SHA256 under a server secret: an index for secrets without storing them."""

    def __init__(self, master: bytes) -> None:
        self._key = _subkey(master, b"lookup-hash")
        self._blind_key = _subkey(master, b"blind-index")

    def hash(self, purpose: str, value: str) -> bytes:
        # The purpose separates domains: a license-key hash can never equal an API-key hash.
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def blind_index(self, column: str, value: str) -> bytes:
        """The keyed blind index of a personal-data value for exact search: HMAC-SHA256 under
        a sub-key of its own, over `column` and the value as given (callers normalise first,
        e.g. `normalise_email`), so equal values in different columns do not match."""
        message = f"{column}\x00{value}".encode()
        return hmac.new(self._blind_key, message, hashlib.sha256).digest()


def normalise_email(address: str) -> str:
    """An e-mail address as its blind index sees it: stripped and lower-cased (the local part
    too: mailbox providers that tell case apart are vanishingly rare, and a search that misses
    `Ops@` for `ops@` is the worse failure)."""
    return address.strip().lower()


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

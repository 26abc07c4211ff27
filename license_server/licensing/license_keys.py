"""The license key format: Ed25519-signed, offline-checkable, copy-safe.

    <PREFIX>-<BODY>        e.g. ACME-0F3K9...   (at most 127 characters)

PREFIX is the product's readable key prefix (1-12 of A-Z 0-9). BODY is Crockford base32
(0-9 A-Z without I L O U) of 71 bytes: version (1) | key hint (1, first byte of the signing
key's RFC 7638 thumbprint) | license id (5, big-endian) | Ed25519 signature (64) over
`b"license-key/v1\\0" + PREFIX + b"\\0" + version|hint|id`. Signing the prefix binds the key to
its product; the license id inside lets the server cross-check the row it finds.

Why Crockford base32: only A-Z and 0-9 (safe unencoded in a form body or URL, as DESIGN.md
requires because some clients post the key without encoding it), and the characters people
confuse are folded on input (O->0, I/L->1, lower case), so a key read over the phone still
parses. The two padding bits must be zero, so one key has exactly one spelling, which keeps its
keyed lookup hash unique.

A forged or mistyped key fails here, before any database lookup. A string that is not shaped
like one of our keys is a legacy key (imported from the WHMCS Licensing Addon).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from license_server.crypto.signing import Keyring, SigningKey, verify_with

KEY_VERSION = 1
PREFIX_MAX = 12
MAX_LICENSE_ID = 2**40 - 1
_BODY_BYTES = 1 + 1 + 5 + 64
_BODY_CHARS = (_BODY_BYTES * 8 + 4) // 5  # 114
_PAD_BITS = _BODY_CHARS * 5 - _BODY_BYTES * 8  # 2
_DOMAIN = b"license-key/v1\x00"

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {char: index for index, char in enumerate(_ALPHABET)}
_DECODE.update({"O": 0, "I": 1, "L": 1})
PREFIX_PATTERN = re.compile(r"^[A-Z0-9]{1,12}$")
# Anything shaped like "<prefix>-<long base32 run>" is treated as an attempt at a signed key
# (and rejected offline when it does not verify), never looked up as a legacy key.
_SIGNED_SHAPE = re.compile(r"^([A-Za-z0-9]{1,12})-([A-Za-z0-9]{100,130})$")


class KeyRejected(ValueError):
    """The text looks like a signed key but is not a genuine one."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "malformed" | "bad_signature"


class UnknownKeyHint(KeyRejected):
    """The key names a signing key (its one-byte hint) that this keyring does not have.

    Either forged or signed by a key another process has just added: the caller may reload the
    keyring once (`Keyring.refresh`) and parse again before refusing.
    """

    def __init__(self, hint: int) -> None:
        super().__init__(
            "bad_signature", "license key signature does not verify (unknown signing key)"
        )
        self.hint = hint


@dataclass(frozen=True, slots=True)
class SignedKey:
    text: str  # canonical spelling
    prefix: str
    license_id: int
    kid: str


def make_license_key(signer: Keyring | SigningKey, prefix: str, license_id: int) -> str:
    """A new license key signed by `signer` (a key, or a keyring's active key)."""
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"key prefix {prefix!r} must be 1-{PREFIX_MAX} characters of A-Z, 0-9")
    if not 0 < license_id <= MAX_LICENSE_ID:
        raise ValueError("license id out of range")
    key = signer.active if isinstance(signer, Keyring) else signer
    head = bytes([KEY_VERSION, key.hint]) + license_id.to_bytes(5, "big")
    signature = key.private_key.sign(_DOMAIN + prefix.encode() + b"\x00" + head)
    return f"{prefix}-{_encode(head + signature)}"


def looks_signed(text: str) -> bool:
    return _SIGNED_SHAPE.match(text.strip()) is not None


def parse_signed_key(keyring: Keyring, text: str) -> SignedKey:
    """Verify a signed key offline; raise KeyRejected for anything not genuine."""
    match = _SIGNED_SHAPE.match(text.strip())
    if match is None:
        raise KeyRejected("malformed", "not a license key of this server")
    prefix = match.group(1).upper()
    body = _decode(match.group(2).upper())
    if body is None:
        raise KeyRejected("malformed", "license key contains characters that cannot occur")
    version, hint, id_bytes, signature = body[0], body[1], body[2:7], body[7:]
    if version != KEY_VERSION:
        raise KeyRejected("malformed", f"license key version {version} is not supported")
    message = _DOMAIN + prefix.encode() + b"\x00" + body[:7]
    candidates = keyring.with_hint(hint)
    if not candidates:
        raise UnknownKeyHint(hint)
    for key in candidates:
        if verify_with(key.public_key, message, signature):
            license_id = int.from_bytes(id_bytes, "big")
            return SignedKey(f"{prefix}-{_encode(body)}", prefix, license_id, key.kid)
    raise KeyRejected("bad_signature", "license key signature does not verify")


def key_hint(text: str) -> int | None:
    """The key hint of a signed key (no signature check): which key signed it, in one byte."""
    match = _SIGNED_SHAPE.match(text.strip())
    body = None if match is None else _decode(match.group(2).upper())
    return None if body is None else body[1]


def _encode(data: bytes) -> str:
    number = int.from_bytes(data, "big") << _PAD_BITS
    chars = []
    for _ in range(_BODY_CHARS):
        chars.append(_ALPHABET[number & 31])
        number >>= 5
    return "".join(reversed(chars))


def _decode(text: str) -> bytes | None:
    if len(text) != _BODY_CHARS:
        return None
    number = 0
    for char in text:
        value = _DECODE.get(char)
        if value is None:
            return None
        number = (number << 5) | value
    if number & ((1 << _PAD_BITS) - 1):
        return None  # non-zero padding: not the one canonical spelling
    return (number >> _PAD_BITS).to_bytes(_BODY_BYTES, "big")

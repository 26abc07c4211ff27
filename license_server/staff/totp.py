"""Staff MFA: TOTP codes (RFC 6238), the enrolment QR code, and recovery codes.

TOTP is what authenticator apps implement: HMAC-SHA-1, 6 digits, 30-second steps (RFC 6238
section 4, the Key URI Format's defaults), through `cryptography`'s `TOTP`. The secret is 20
random bytes (RFC 4226 section 4 asks for at least 128 bits, recommends 160; ASVS 4.0.3
V2.8.3, V6.3.1); store it encrypted (`FieldCipher`, as text from `secret_to_text`).

`check_code` accepts the current step and one step either side (RFC 6238 section 5.2: one
step of network delay and clock drift; ASVS V2.8.1), only exactly six ASCII digits, and each
(account, step) once, through the shared `OneTimeValues` (ASVS V2.8.4): a code seen on the
wire or over a shoulder cannot be replayed on any instance while it is still valid. The result
tells a replay from a wrong code so the caller can log it (ASVS V2.8.5). Guessing is limited
by the caller's rate limit on the sign-in (ASVS V2.2.1): each guess has 3 chances in 10^6.

Recovery codes (ASVS V2.6, "look-up secrets"): 12 characters from Crockford's base32 alphabet
(60 bits), shown as `xxxx-xxxx-xxxx`. 60 bits is below V2.6.2's 112, so each is stored as a
random 16-byte salt and HMAC-SHA256 under a server key (`LookupHasher`, a sub-key of the data
key): salted and one-way as V2.6.2 asks, and a stolen database alone does not allow an offline
search, which a bare SHA-256 of 60 bits would (2^60 hashes is within reach of a GPU farm).
Argon2id for ten codes would cost a couple of seconds per recovery login, buying nothing the
server key does not already buy. The caller deletes a code once used (V2.6.1).
"""

from __future__ import annotations

import base64
import enum
import hmac
import io
import os
import re
import secrets
from collections.abc import Sequence

import segno
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from license_server.crypto.fields import LookupHasher
from license_server.one_time import OneTimeValues

DIGITS = 6
STEP_SECONDS = 30
SECRET_BYTES = 20
# RFC 6238 5.2: the previous and next step are accepted too.
WINDOW_STEPS = 1
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> bytes:
    """20 random bytes from the OS CSPRNG: a new TOTP secret for one account."""
    return os.urandom(SECRET_BYTES)


def secret_to_text(secret: bytes) -> str:
    """Base32 without padding: the form authenticator apps accept for manual entry, and the
    text to encrypt with `FieldCipher`."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def secret_from_text(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8), casefold=False)


def _totp(secret: bytes) -> TOTP:
    # ruff S303 / bandit B303: SHA-1 is used as HMAC-SHA-1, as RFC 6238 and every authenticator
    # app default to; HMAC is not weakened by SHA-1's collisions. Secrets under 128 bits raise.
    return TOTP(secret, DIGITS, SHA1(), STEP_SECONDS)  # noqa: S303 # nosec B303


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI to show as a QR code. The label is `issuer:account`, so
    neither may contain a colon (Key URI Format)."""
    for what, value in (("account", account), ("issuer", issuer)):
        if not value or ":" in value:
            raise ValueError(f"{what}: non-empty, without ':'")
    return _totp(secret).get_provisioning_uri(account, issuer)


class CodeCheck(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"  # not a code of this secret near `now`
    MALFORMED = "malformed"  # not exactly six ASCII digits
    REPLAYED = "replayed"  # right, but already used for this step: log it (ASVS V2.8.5)


def _matching_steps(secret: bytes, code: str, now: float) -> list[int]:
    totp, current = _totp(secret), int(now // STEP_SECONDS)
    given, found = code.encode("ascii"), []
    candidates = [current]
    for k in range(1, WINDOW_STEPS + 1):
        candidates += [current - k, current + k]
    # Every candidate is compared, without an early exit, in constant time.
    for step in candidates:
        if hmac.compare_digest(totp.generate(step * STEP_SECONDS), given):
            found.append(step)
    return found


async def check_code(
    secret: bytes, code: object, *, now: float, once: OneTimeValues, account_id: int | str
) -> CodeCheck:
    """Check one submitted code; ACCEPTED at most once per (account, step) on every instance.
    `now` is Unix time in seconds (injected: tests and the caller's clock).
    `OneTimeStoreUnavailable` propagates: the caller refuses the sign-in (fail closed)."""
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        return CodeCheck.MALFORMED
    steps = _matching_steps(secret, code, now)
    for step in steps:
        # A step's code is accepted until the end of step + 1 (the window); the claim outlives
        # that by one more step, for instances whose clocks differ a little.
        ttl = (step + 2 + 1) * STEP_SECONDS - now
        if await once.claim("totp", f"{account_id}:{step}", ttl):
            return CodeCheck.ACCEPTED
    return CodeCheck.REPLAYED if steps else CodeCheck.WRONG


async def verify_code(
    secret: bytes, code: object, *, now: float, once: OneTimeValues, account_id: int | str
) -> bool:
    """True once for a right code (see `check_code`); False for wrong, malformed, replayed."""
    result = await check_code(secret, code, now=now, once=once, account_id=account_id)
    return result is CodeCheck.ACCEPTED


def qr_svg(uri: str, *, title: str = "QR code for your authenticator app") -> str:
    """The QR code of `uri` as an `<svg>` element to embed in a page: no XML declaration, no
    external reference, a `<title>` as its accessible name (WCAG 1.1.1), `role="img"`."""
    qr = segno.make(uri, error="m", micro=False)
    out = io.BytesIO()
    # segno escapes the title; colours are fixed (dark on light scans best); a viewBox
    # (omitsize) lets the page's CSS resize it, width and height give it a size without CSS.
    qr.save(out, kind="svg", xmldecl=False, svgns=True, title=title, nl=False, scale=4,
            border=4, dark="#000", light="#fff", svgclass="qr-code", lineclass=None,
            omitsize=True)  # fmt: skip
    svg = out.getvalue().decode("utf-8")
    if not svg.startswith("<svg "):  # segno's output format is what makes this safe to inline
        raise RuntimeError("segno did not write a bare <svg> element")
    width, height = qr.symbol_size(scale=4, border=4)
    return f'<svg role="img" width="{width}" height="{height}" ' + svg[len("<svg ") :]


# --- recovery codes ---------------------------------------------------------------------------

# Crockford's base32: no I, L, O, U; on input O reads as 0 and I, L as 1, so a misread code
# still matches (https://www.crockford.com/base32.html).
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_READ_AS = str.maketrans({"o": "0", "i": "1", "l": "1"})
_GROUPS, _GROUP_LEN = 3, 4
RECOVERY_CODE_BITS = _GROUPS * _GROUP_LEN * 5  # 60
_SEPARATORS = re.compile(r"[\s\-_\u2010-\u2015\u2212]+")
_RECOVERY_PURPOSE = "staff-recovery-code"
_SALT_BYTES = 16


def new_recovery_codes(n: int = 10) -> list[str]:
    """`n` fresh codes like `7k2m-q9xd-4hzp`, 60 bits each, to show the user once."""
    if not 1 <= n <= 100:
        raise ValueError("n: 1..100")
    codes = []
    for _ in range(n):
        chars = "".join(secrets.choice(_ALPHABET) for _ in range(_GROUPS * _GROUP_LEN))
        codes.append("-".join(chars[i : i + _GROUP_LEN] for i in range(0, len(chars), 4)))
    return codes


def normalise_recovery_code(code: object) -> str | None:
    """The canonical 12 characters, or None for what cannot be a recovery code: spacing,
    dashes and case do not matter, O/I/L read as 0/1; anything else outside the alphabet,
    non-ASCII digits included, is refused."""
    if not isinstance(code, str) or len(code) > 64:
        return None
    compact = _SEPARATORS.sub("", code).lower().translate(_READ_AS)
    if len(compact) != _GROUPS * _GROUP_LEN or not all(c in _ALPHABET for c in compact):
        return None
    return compact


def _mac(hasher: LookupHasher, salt: bytes, compact: str) -> bytes:
    return hasher.hash(_RECOVERY_PURPOSE, salt.hex() + compact)


def hash_recovery_code(code: str, hasher: LookupHasher) -> bytes:
    """What to store for one code: 16-byte random salt + HMAC-SHA256 (48 bytes)."""
    compact = normalise_recovery_code(code)
    if compact is None:
        raise ValueError("not a recovery code")
    salt = os.urandom(_SALT_BYTES)
    return salt + _mac(hasher, salt, compact)


def match_recovery_code(code: object, hashes: Sequence[bytes], hasher: LookupHasher) -> int | None:
    """The index in `hashes` of the stored code that `code` is, or None. Every stored hash is
    compared (constant time, no early exit); the caller deletes the matched one (single use)."""
    compact = normalise_recovery_code(code)
    if compact is None:
        return None
    found = None
    for index, stored in enumerate(hashes):
        if not isinstance(stored, bytes) or len(stored) != _SALT_BYTES + 32:
            continue
        salt, mac = stored[:_SALT_BYTES], stored[_SALT_BYTES:]
        if hmac.compare_digest(_mac(hasher, salt, compact), mac) and found is None:
            found = index
    return found

"""Staff password storage (Argon2id, PHC strings) and the password policy.

Storage (ASVS 4.0.3 V2.4.1, V2.4.2): Argon2id through `cryptography`'s `Argon2id`, with the
seed's parameters t=3, m=64 MiB, p=4, a 16-byte random salt and a 32-byte hash. They are also
the second recommended option of RFC 9106 section 4, and above OWASP's minimum (m=19 MiB, t=2,
p=1). Hashes are PHC strings, `$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>` with standard
base64 without padding (the PHC string format), so other Argon2 libraries read them.

Hostile input. The password is capped at `MAX_INPUT_CHARS` code points *before* anything is
hashed: a 1 MB "password" is refused at once and never reaches Argon2. A stored PHC string is
parsed here, strictly, and its cost parameters bounded before any work: a malformed or tampered
row is a failed verification (False), never an exception and never a 4 GiB allocation.
Passwords are NFKC-normalised before hashing (the same password typed on another keyboard or
platform verifies; NIST SP 800-63B 5.1.1.2) and never truncated (V2.1.3).

Concurrency. Argon2 holds 64 MiB for ~0.2 s, and `cryptography`'s derivation holds the GIL
all that time: run in a thread, it stopped the event loop (bench/login_storm.py measured a
verify p99 44x quiet under a spread login storm). So the `*_async` wrappers run it in a small
pool of processes (`cpu - 1`, at least one; started with "spawn", never a fork of a process
with threads and an event loop): the verify path keeps its core, and a burst of logins costs
at most that many x 64 MiB. A pool whose worker died is replaced on the next call.

Login timing (V2.2, STYLE.md "compare against a dummy hash when the user does not exist"):
`verify_password_or_dummy(None, pw)` does one full Argon2id derivation, as for a real account.

Policy (`check_password`, V2.1): at least 12 code points after NFKC (V2.1.1), at most 128
(V2.1.2), any printable Unicode (V2.1.4), not the e-mail's local part nor the name, not on the
shipped list of common passwords nor a common password with digits and symbols around it
(V2.1.7; see README.md beside this file for where the list comes from). The seed (000, "Password
Requirements") also asks for upper case, lower case, digits and special characters; ASVS V2.1.9
advises against composition rules, but the seed is the standard this admin is judged by, so the
rule is kept, in one place (`_CHARACTER_CLASSES`). The seed's "rotation every 90-180 days" is
`password_expired`, off unless the caller passes a maximum age (ASVS V2.1.10 advises against
forced rotation).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import functools
import gzip
import hmac
import multiprocessing
import os
import re
import threading
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
# Verification refuses longer input without hashing it. Larger than MAX_PASSWORD_LENGTH because
# NFKC can shorten a string (decomposed accents compose): every password the policy accepted
# still verifies, and nothing near 1 MB is ever normalised or hashed.
MAX_INPUT_CHARS = 4 * MAX_PASSWORD_LENGTH


@dataclass(frozen=True, slots=True)
class Argon2Params:
    time_cost: int = 3
    memory_cost_kib: int = 64 * 1024
    parallelism: int = 4
    salt_len: int = 16
    hash_len: int = 32


DEFAULT_PARAMS = Argon2Params()

# Bounds on what a stored PHC string may ask for: 4x today's memory leaves room to raise the
# parameters later, and stops a tampered row from exhausting memory or CPU at the next login.
_MAX_MEMORY_KIB = 4 * DEFAULT_PARAMS.memory_cost_kib
_MAX_TIME_COST = 16
_MAX_PARALLELISM = 16

_MAX_CONCURRENT_HASHES = max(2, os.cpu_count() or 2)
_hash_slots = threading.BoundedSemaphore(_MAX_CONCURRENT_HASHES)

_PHC = re.compile(
    r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,9})"
    r"\$([A-Za-z0-9+/]{11,88})\$([A-Za-z0-9+/]{22,88})"
)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """Standard base64 without padding, canonical only (PHC string format)."""
    if len(text) % 4 == 1:
        raise ValueError("base64: impossible length")
    raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    if _b64encode(raw) != text:  # unused low bits set: not the canonical encoding
        raise ValueError("base64: not canonical")
    return raw


@dataclass(frozen=True, slots=True)
class _Parsed:
    params: Argon2Params
    salt: bytes
    digest: bytes


def _parse(phc: str) -> _Parsed:
    match = _PHC.fullmatch(phc)
    if match is None:
        raise ValueError("not an Argon2id v19 PHC string")
    m, t, p = (int(group) for group in match.group(1, 2, 3))
    try:
        salt, digest = _b64decode(match.group(4)), _b64decode(match.group(5))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("PHC salt or hash is not base64") from exc
    if not (8 * p <= m <= _MAX_MEMORY_KIB and t <= _MAX_TIME_COST and p <= _MAX_PARALLELISM):
        raise ValueError("PHC parameters out of bounds")
    if not (8 <= len(salt) <= 64 and 16 <= len(digest) <= 64):
        raise ValueError("PHC salt or hash length out of bounds")
    params = Argon2Params(t, m, p, len(salt), len(digest))
    return _Parsed(params, salt, digest)


def _encode(params: Argon2Params, salt: bytes, digest: bytes) -> str:
    return (
        f"$argon2id$v=19$m={params.memory_cost_kib},t={params.time_cost},"
        f"p={params.parallelism}${_b64encode(salt)}${_b64encode(digest)}"
    )


def _password_bytes(password: str) -> bytes:
    """NFKC, then UTF-8; ValueError for input too long or not encodable (lone surrogates)."""
    if not isinstance(password, str):
        raise TypeError("password must be str")
    if len(password) > MAX_INPUT_CHARS:
        raise ValueError("password too long")
    return unicodedata.normalize("NFKC", password).encode("utf-8")  # strict: surrogates fail


def _derive(params: Argon2Params, salt: bytes, secret: bytes) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=params.hash_len,
        iterations=params.time_cost,
        lanes=params.parallelism,
        memory_cost=params.memory_cost_kib,
    )
    with _hash_slots:
        return kdf.derive(secret)


def hash_password(password: str, *, params: Argon2Params = DEFAULT_PARAMS) -> str:
    """The PHC string to store. TypeError/ValueError for a non-str, over-long or unencodable
    password (check the policy first: it says why in words)."""
    secret = _password_bytes(password)
    salt = os.urandom(params.salt_len)  # V6.3.1: the OS CSPRNG
    return _encode(params, salt, _derive(params, salt, secret))


def verify_password(phc: str, password: str) -> bool:
    """True when `password` matches the stored `phc`. Anything malformed, of the wrong type or
    over-long is False, without an exception and, when over-long, without hashing."""
    try:
        secret = _password_bytes(password)
        parsed = _parse(phc)
    except (TypeError, ValueError):
        return False
    derived = _derive(parsed.params, parsed.salt, secret)
    return hmac.compare_digest(derived, parsed.digest)


def needs_rehash(phc: str, *, params: Argon2Params = DEFAULT_PARAMS) -> bool:
    """True when `phc` is weaker than `params` in any parameter (or unreadable): rehash the
    password at the next successful login (ASVS V2.4.1 kept over time)."""
    try:
        stored = _parse(phc).params
    except (TypeError, ValueError):
        return True
    return (
        stored.time_cost < params.time_cost
        or stored.memory_cost_kib < params.memory_cost_kib
        or stored.parallelism < params.parallelism
        or stored.salt_len < params.salt_len
        or stored.hash_len < params.hash_len
    )


@functools.cache
def _dummy_hash(params: Argon2Params) -> str:
    # Fixed bytes, not a hash of anything: no password can match, yet verifying against it
    # costs one full derivation with `params`, as a real account does.
    return _encode(params, b"\x5a" * params.salt_len, b"\xa5" * params.hash_len)


DUMMY_HASH = _dummy_hash(DEFAULT_PARAMS)


def verify_password_or_dummy(
    phc: str | None, password: str, *, params: Argon2Params = DEFAULT_PARAMS
) -> bool:
    """`verify_password`, or for an unknown account (`phc` None) the same work against a dummy
    hash and False, so that response time does not tell which accounts exist."""
    if phc is None:
        verify_password(_dummy_hash(params), password)
        return False
    return verify_password(phc, password)


_POOL_WORKERS = max(1, (os.cpu_count() or 2) - 1)
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor(replace_broken: ProcessPoolExecutor | None = None) -> ProcessPoolExecutor:
    global _pool  # one pool per process, made on first use: not per app or per request
    with _pool_lock:
        if _pool is not None and _pool is replace_broken:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        if _pool is None:
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(_POOL_WORKERS, mp_context=context)
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        return _pool


async def _off_loop(function, *args, **kwargs):
    """`function(*args, **kwargs)` in the hashing processes, off the event loop and its GIL."""
    call = functools.partial(function, *args, **kwargs)
    loop = asyncio.get_running_loop()
    pool = _executor()
    try:
        return await loop.run_in_executor(pool, call)
    except BrokenProcessPool:  # a worker was killed (OOM): a new pool, one more try
        return await loop.run_in_executor(_executor(replace_broken=pool), call)


async def hash_password_async(password: str, *, params: Argon2Params = DEFAULT_PARAMS) -> str:
    return await _off_loop(hash_password, password, params=params)


async def verify_password_async(phc: str, password: str) -> bool:
    return await _off_loop(verify_password, phc, password)


async def verify_password_or_dummy_async(
    phc: str | None, password: str, *, params: Argon2Params = DEFAULT_PARAMS
) -> bool:
    return await _off_loop(verify_password_or_dummy, phc, password, params=params)


# --- policy ---------------------------------------------------------------------------------

_CHARACTER_CLASSES = (
    ("an upper-case letter", str.isupper),
    ("a lower-case letter", str.islower),
    ("a digit", lambda c: unicodedata.category(c) == "Nd"),
    ("a special character (not a letter or digit)", lambda c: not c.isalnum()),
)

# Leetspeak read back to letters, for the "common password with decoration" rule.
_DELEET = str.maketrans({"@": "a", "4": "a", "8": "b", "3": "e", "1": "i", "!": "i", "0": "o",
                         "$": "s", "5": "s", "7": "t", "+": "t"})  # fmt: skip
_NOT_LETTERS_AT_ENDS = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_CONTEXT_SEPARATORS = re.compile(r"[\s._+\-]+")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped common-password list, casefolded, loaded once."""
    blob = resources.files(__package__).joinpath("common-passwords.txt.gz").read_bytes()
    text = gzip.decompress(blob).decode("utf-8")
    return frozenset(line.casefold() for line in text.splitlines() if line)


def _context_words(email: str | None, name: str | None) -> set[str]:
    words: set[str] = set()
    local = (email or "").rpartition("@")[0] or (email or "")
    for source in (local, name or ""):
        folded = unicodedata.normalize("NFKC", source).casefold().strip()
        words.add(folded)
        words.update(_CONTEXT_SEPARATORS.split(folded))
    # Shorter fragments ("al", "j") would forbid half of all passwords and protect nothing.
    return {word for word in words if len(word) >= 3}


def check_password(password: str, *, email: str | None, name: str | None) -> list[str]:
    """Why `password` is refused as a new staff password, in words; empty when it is accepted.
    TypeError for a non-str password (a programming error, not input)."""
    if not isinstance(password, str):
        raise TypeError("password must be str")
    if len(password) > MAX_INPUT_CHARS:  # checked before normalising 1 MB of input
        return [f"Use at most {MAX_PASSWORD_LENGTH} characters."]
    normal = unicodedata.normalize("NFKC", password)
    length = len(normal)
    problems: list[str] = []
    if any(unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in normal):
        problems.append("Use only printable characters (no control characters).")
    if length < MIN_PASSWORD_LENGTH:
        problems.append(f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    elif length > MAX_PASSWORD_LENGTH:
        problems.append(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    missing = [label for label, test in _CHARACTER_CLASSES if not any(map(test, normal))]
    if missing:
        problems.append("Include " + ", ".join(missing) + ".")
    folded = normal.casefold()
    if any(word in folded for word in _context_words(email, name)):
        problems.append("Do not use your name or e-mail address in the password.")
    core = _NOT_LETTERS_AT_ENDS.sub("", folded)
    common = common_passwords()
    if folded in common or folded.translate(_DELEET) in common:
        problems.append("This password is too common: choose another one.")
    elif len(core) >= 4 and (core in common or core.translate(_DELEET) in common):
        problems.append("This password is a common password with digits or symbols added.")
    return problems


def password_expired(changed_at: datetime, now: datetime, max_age_days: int | None) -> bool:
    """True when a maximum password age is configured and `changed_at` is older than it. The
    seed asks for rotation every 90-180 days; ASVS V2.1.10 advises against it, so None (the
    caller's default) means passwords do not expire."""
    if max_age_days is None or max_age_days <= 0:
        return False
    return now - changed_at >= timedelta(days=max_age_days)

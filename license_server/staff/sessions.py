"""Staff session rules, without storage: ids, lifetimes, CSRF tokens and the Origin check.

Session ids (ASVS 4.0.3 V3.2.2, V6.3.1): 32 random bytes from the OS CSPRNG, url-safe base64
(43 characters, 256 bits). The store keeps only `session_key(id)`, a SHA-256 of it, so a copy
of the sessions table does not hand over live sessions; SHA-256 without salt is enough for a
256-bit random value. The caller issues a new id at sign-in and on any change of privilege
(V3.2.1, seed 000 "Session Rotation"), deletes it at sign-out (V3.3.1), and sends it only in
the `SESSION_COOKIE` cookie: the `__Host-` prefix makes the browser insist on Secure, Path=/
and no Domain (V3.4.1, V3.4.4, V3.4.5); HttpOnly and SameSite=Lax go with it (V3.4.2, V3.4.3).

Lifetimes (V3.3.2, level 2: "12 hours or 30 minutes of inactivity"; seed 000's 12 h
PERMANENT_SESSION_LIFETIME): a session ends 12 hours after sign-in whatever happens, and after
30 minutes without a request. Timestamps from the future (beyond a small clock skew between
instances) or out of order end the session too: fail closed (V4.1.5).

CSRF (V4.2.2, V13.2.3): every form carries a random token bound to the session, compared in
constant time, and every state-changing request must come from one of our own origins: the
`Origin` header when the browser sends one, else `Sec-Fetch-Site: same-origin`. A request with
neither is refused; every browser that can run the admin sends at least one of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

SESSION_COOKIE = "__Host-staff-session"
_ID_BYTES = 32
_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_MAX_TOKEN_CHARS = 256


class InvalidSessionId(ValueError):
    """A cookie value that cannot be one of our session ids: treat as no session."""


def new_session_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def is_session_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def session_key(session_id: str) -> bytes:
    """The 32-byte key to store and look the session up by; `InvalidSessionId` for anything
    that `new_session_id` cannot have made (checked before hashing or touching the store)."""
    if not is_session_id(session_id):
        raise InvalidSessionId("not a session id")
    return hashlib.sha256(session_id.encode("ascii")).digest()


@dataclass(frozen=True, slots=True)
class SessionTimes:
    absolute: timedelta = timedelta(hours=12)
    idle: timedelta = timedelta(minutes=30)
    clock_skew: timedelta = timedelta(seconds=30)

    def expires_at(self, created_at: datetime, last_seen_at: datetime) -> datetime:
        """When the session ends if no request comes first (a cookie or store TTL)."""
        return min(created_at + self.absolute, last_seen_at + self.idle)

    def expired(self, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        for value in (created_at, last_seen_at, now):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError("session times must be timezone-aware")
        if last_seen_at < created_at or max(created_at, last_seen_at) > now + self.clock_skew:
            return True
        return now >= self.expires_at(created_at, last_seen_at)


DEFAULT_TIMES = SessionTimes()


def expired(
    created_at: datetime,
    last_seen_at: datetime,
    now: datetime,
    absolute: timedelta = DEFAULT_TIMES.absolute,
    idle: timedelta = DEFAULT_TIMES.idle,
) -> bool:
    """True when the session has ended: `absolute` after sign-in or `idle` after its last
    request (see `SessionTimes`)."""
    return SessionTimes(absolute, idle).expired(created_at, last_seen_at, now)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: object, given: object) -> bool:
    """True when the submitted token equals the session's, compared in constant time. An empty,
    missing, non-ASCII or over-long token never matches."""
    if not isinstance(expected, str) or not isinstance(given, str) or not expected:
        return False
    if len(given) > _MAX_TOKEN_CHARS or not given.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def origin_allowed(
    method: str, origin: str | None, sec_fetch_site: str | None, own_origins: Collection[str]
) -> bool:
    """May this request change state? GET and HEAD always may (they must not change state);
    any other method needs `Origin` equal to one of `own_origins` (`scheme://host[:port]`),
    or, when the browser sent no Origin, `Sec-Fetch-Site: same-origin`."""
    if method in _SAFE_METHODS:
        return True
    if origin:  # present: it decides, whatever Sec-Fetch-Site says
        ours = {_origin(o) for o in own_origins if o}
        return origin.lower() != "null" and origin.lower() in ours
    return sec_fetch_site == "same-origin"

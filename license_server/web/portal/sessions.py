"""Customer sessions of the customer page: who entered which license key, kept server-side.

ASVS 4.0.3 V3 as the page applies it:
- V3.2.1, V3.2.2: a new random token (256 bits, `secrets`) when a key is accepted; the cookie
  that came before (which carried only the CSRF seed) is replaced, so a planted cookie never
  becomes a session (session fixation).
- V3.2.3, V3.4.1-V3.4.5: the token travels only in a cookie named `__Host-portal` (no Domain,
  Path `/`), Secure, HttpOnly, SameSite=Strict. Browsers accept Secure cookies on
  http://localhost and 127.0.0.1, which are secure contexts; anywhere else the page must be
  served over TLS (or a TLS proxy), as the admin must.
- V3.3.1, V3.3.2: sign-out deletes the row; a session ends after `session_idle_minutes`
  without a request (30 by default) and `session_max_hours` after it began, whatever happens.
- V3.2.3 / V8.3.1: the database keeps a SHA-256 of the token only, and the session knows its
  license by id and the key's local-key hash (`lkh`, which every local key carries anyway):
  the key itself is never stored, put in a cookie or written into a page.

CSRF (V4.2.2): every form carries a token derived from the cookie with the server's keyed
hash (an HMAC: "signed double submit"), so a form made before any key was entered is
protected too, and a session's token changes with its cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from license_server.crypto.fields import LookupHasher
from license_server.db import portal as portal_rows
from license_server.db.database import Database

COOKIE = "__Host-portal"
_MAX_TOKEN_CHARS = 100
# A session's last-seen time is written at most this often (a page view is not a write each).
_TOUCH_SECONDS = 60


@dataclass(frozen=True, slots=True)
class CustomerSession:
    id: int
    license_id: int
    lkh: str  # the key's local-key hash: what a local key for it carries
    created_at: int


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def well_formed(token: str | None) -> bool:
    return bool(token) and len(token) <= _MAX_TOKEN_CHARS and token.isascii()


class CustomerSessions:
    def __init__(
        self,
        db: Database,
        hasher: LookupHasher,
        clock: Callable[[], float],
        *,
        idle_seconds: int,
        max_seconds: int,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds

    def now(self) -> int:
        return int(self._clock())

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def csrf_for(self, cookie: str) -> str:
        """The form token that goes with this cookie (HMAC under the server's data key)."""
        return self._hasher.hash("portal-csrf", cookie).hex()

    def csrf_matches(self, cookie: str | None, given: object) -> bool:
        if not well_formed(cookie) or not isinstance(given, str) or not given.isascii():
            return False
        return hmac.compare_digest(self.csrf_for(cookie).encode(), given.encode())

    async def start(self, license_id: int, lkh: str) -> str:
        """A new session for the license; returns the cookie's token. Stale sessions of
        anyone are deleted on the way (the table holds live sessions only)."""
        token = self.new_token()
        now = self.now()
        async with self._db.write() as conn:
            await portal_rows.delete_stale_sessions(
                conn, now - self.idle_seconds, now - self.max_seconds
            )
            await portal_rows.insert_session(conn, token_hash(token), license_id, lkh, now)
        return token

    async def current(self, token: str | None) -> CustomerSession | None:
        """The live session of this cookie, or None (unknown, idle too long, too old)."""
        if not well_formed(token):
            return None
        digest = token_hash(token)
        async with self._db.read() as conn:
            row = await portal_rows.session_by_hash(conn, digest)
        if row is None:
            return None
        now = self.now()
        if now - row["last_seen_at"] >= self.idle_seconds or (
            now - row["created_at"] >= self.max_seconds
        ):
            async with self._db.write() as conn:
                await portal_rows.delete_session(conn, digest)
            return None
        if now - row["last_seen_at"] >= _TOUCH_SECONDS:
            async with self._db.write() as conn:
                await portal_rows.touch_session(conn, row["id"], now)
        return CustomerSession(row["id"], row["license_id"], row["lkh"], row["created_at"])

    async def end(self, token: str | None) -> None:
        if well_formed(token):
            async with self._db.write() as conn:
                await portal_rows.delete_session(conn, token_hash(token))

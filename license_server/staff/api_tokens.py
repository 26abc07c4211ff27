"""Short-lived access tokens and rotating refresh tokens for the vendor API (issue #13).

A service that holds an API key exchanges it (`POST /api/v1/tokens`) for an access token (a JWT,
RFC 7519, valid 15 minutes) and a refresh token (7 days). It then sends the access token as its
bearer credential and, before it expires, trades the refresh token for a new pair. The API key
itself can stay in a vault and is presented once per family, not on every request.

Access tokens (ASVS 4.0.3 V3.5.2, V3.5.3; RFC 8725 best current practice; RFC 9068 profile):
- signed with EdDSA (Ed25519) by a key of their own (`crypto/keystore.load_token_keyring`),
  never the license-signing key (RFC 8725 §3.9: one key per purpose); `kid` names it, and the
  public half is published at `/api/v1/tokens/jwks.json`;
- header `typ: at+jwt` (RFC 8725 §3.11 explicit typing, RFC 9068 §2.1), claims `iss` (the
  server's `issuer` setting), `aud` (`AUDIENCE`), `sub` (the API key's id), `client_id` (its
  visible prefix), `scope` (its scopes, space separated), `iat`, `nbf`, `exp`, `jti`, and `fam`
  (the token family, below);
- checked strictly (RFC 8725 §3.1, §3.8, §3.10): the algorithm must be EdDSA (the header's own
  `alg` is never trusted: `none`, HS256 signed with the public key and every other algorithm
  are refused before any key is used), a known `kid`, `typ` at+jwt, `iss` and `aud` equal to
  ours exactly (`aud` a single string), every claim present and of its type, `exp`/`nbf`/`iat`
  against the service clock with `LEEWAY_SECONDS` of leeway, and no lifetime longer than we
  issue. Any failure is the same 401 for the client; the reason is only logged.

Refresh tokens (V3.5.1, V2.10; RFC 9700 §4.14 refresh token rotation):
- `lsr_` + 32 random bytes (base64url): only their SHA-256 is stored, one row each, with the
  family they belong to (a 256-bit random secret needs no slow hash; staff/api_keys.py says
  why);
- every use spends the token (a conditional UPDATE: of two concurrent uses one wins) and
  issues a new one in the same family; the new one lives 7 days from then, never past the API
  key's expiry;
- presenting a spent token again means two parties hold it, one of them a thief: the WHOLE
  family is revoked (every refresh token of it, and every access token carrying its `fam`),
  and the legitimate client starts again from its API key.

Why a family check on every request, instead of trusting the JWT until `exp`: a revoked family
(reuse, or its API key revoked or expired) must stop its access tokens at once, on every
instance. The check is one primary-key read of the family joined with its API key, on a reader
connection, which is exactly the price the API-key path already pays per request (it reads the
key's row), so tokens cost nothing more; a cache or revocation list would add staleness and a
second mechanism for a read that is already cheap. The JWT still earns its keep: scopes and
identity travel signed, the API key stays out of everyday traffic, and tokens die on their own.

Revoking an API key revokes its families too (staff/api_keys.py). Exchanges and family
revocations go through the license service's single write path with an audit row; rotations
are not audited (one every 15 minutes per client would drown the log) but are in the table.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

import jwt

from license_server.crypto.signing import Keyring
from license_server.db import api_keys as key_rows
from license_server.db import api_tokens as token_rows
from license_server.licensing.actors import Actor, ActorKind
from license_server.licensing.service import LicenseService
from license_server.staff.api_keys import ApiKey, Authenticated, KeyState, key_from_row

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"  # noqa: S105 # nosec B105
AUDIENCE = "license-server/api/v1"
ACCESS_SECONDS = 15 * 60
REFRESH_SECONDS = 7 * 24 * 3600
LEEWAY_SECONDS = 30
REFRESH_PREFIX = "lsr_"
_REFRESH = re.compile(r"^lsr_[A-Za-z0-9_-]{43}$")
# A JWS in compact form: three base64url parts. API keys (lsk_live_...) never contain a dot.
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TOKEN_LENGTH = 4096
_REQUIRED = ("iss", "aud", "sub", "scope", "iat", "nbf", "exp", "jti", "fam")
PRUNE_EVERY_SECONDS = 60
_REFRESHING = Actor(ActorKind.API, "refresh-token")
KEEP_EXPIRED_SECONDS = 24 * 3600


def looks_like_access_token(presented: str) -> bool:
    """Tell a bearer credential's kind by its shape: a JWT, or else an API key."""
    return len(presented) <= MAX_TOKEN_LENGTH and _JWT.match(presented) is not None


def refresh_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenRefused(Exception):
    """A refresh token or access token that may not be used; `reason` is for the log and the
    problem document's detail (never which check failed on an access token)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    scope: str


class ApiTokens:
    def __init__(self, licenses: LicenseService, keyring: Keyring, issuer: str) -> None:
        self._licenses = licenses
        self._keyring = keyring  # the token keys only
        self._issuer = issuer
        self._pruned_at = 0

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    # -- issuing ------------------------------------------------------------------------------

    async def exchange_key(self, key: ApiKey) -> TokenPair:
        """A new family for a live, authenticated API key: its first access and refresh token."""
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        prune = self._licenses.now() - self._pruned_at >= PRUNE_EVERY_SECONDS

        async def work(writes) -> TokenPair:
            if prune:
                await token_rows.prune_expired(writes.conn, writes.now - KEEP_EXPIRED_SECONDS)
            family_id = await token_rows.insert_family(writes.conn, key.id, writes.now)
            pair = self._pair(key, family_id, refresh, writes.now)
            await token_rows.insert_refresh_token(
                writes.conn, family_id, refresh_hash(refresh), writes.now,
                writes.now + pair.refresh_expires_in,
            )  # fmt: skip
            await self._licenses.audit.append(
                writes.conn, at=writes.now, actor=key.actor, action="api_token.issue",
                target=f"api_key:{key.id}", detail={"family": family_id},
            )  # fmt: skip
            return pair

        pair = await self._licenses.write(key.actor, work)
        if prune:
            self._pruned_at = self._licenses.now()
        return pair

    async def key_id_of(self, presented: str) -> int | None:
        """The API key behind a refresh token, if it is one of ours (a read, nothing spent)."""
        if _REFRESH.match(presented) is None:
            return None
        async with self._licenses.db.read() as conn:
            row = await token_rows.refresh_token_by_hash(conn, refresh_hash(presented))
        return None if row is None else row["api_key_id"]

    async def refresh(self, presented: str) -> tuple[ApiKey, TokenPair]:
        """Spend a refresh token for a new pair in its family (TokenRefused if it may not be
        used; a spent one revokes its family, committed before the refusal is raised)."""
        if _REFRESH.match(presented) is None:
            raise TokenRefused("invalid", "The refresh token is not valid.")
        new_refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)

        async def work(writes) -> tuple[str, ApiKey | None, TokenPair | None]:
            conn, now = writes.conn, writes.now
            row = await token_rows.refresh_token_by_hash(conn, refresh_hash(presented))
            if row is None:
                return "invalid", None, None
            if row["family_revoked_at"] is not None:
                return "revoked", None, None
            if row["expires_at"] <= now:
                return "expired", None, None
            key_row = await key_rows.api_key_by_id(conn, row["api_key_id"])
            if key_row is None:
                return "invalid", None, None
            key = key_from_row(key_row)
            if row["spent_at"] is not None or not await token_rows.spend_refresh_token(
                conn, row["id"], now
            ):
                await self._revoke(writes, key, row["family_id"], "refresh token reused")
                return "reused", key, None
            state = key.state(now)
            if state is not KeyState.ACTIVE:
                await self._revoke(writes, key, row["family_id"], f"api key {state.value}")
                return state.value, key, None
            pair = self._pair(key, row["family_id"], new_refresh, now)
            await token_rows.insert_refresh_token(
                conn, row["family_id"], refresh_hash(new_refresh), now,
                now + pair.refresh_expires_in,
            )  # fmt: skip
            return "", key, pair

        # Rotations write no audit row; a family revocation's row names the key (_revoke).
        problem, key, pair = await self._licenses.write(_REFRESHING, work)
        if pair is None or key is None:
            if problem == "reused":
                log.warning(
                    "a spent refresh token of API key %s was presented again: its token family "
                    "is revoked", key.prefix if key else "?",
                )  # fmt: skip
            raise TokenRefused(problem, _REFRESH_DETAIL.get(problem, _REFRESH_DETAIL["invalid"]))
        return key, pair

    async def _revoke(self, writes, key: ApiKey, family_id: int, reason: str) -> None:
        if await token_rows.revoke_family(writes.conn, family_id, writes.now, reason):
            await self._licenses.audit.append(
                writes.conn, at=writes.now, actor=key.actor, action="api_token.revoke_family",
                target=f"api_key:{key.id}", detail={"family": family_id, "reason": reason},
            )  # fmt: skip

    def _pair(self, key: ApiKey, family_id: int, refresh: str, now: int) -> TokenPair:
        access_until = now + ACCESS_SECONDS
        refresh_until = now + REFRESH_SECONDS
        if key.expires_at is not None:  # no token outlives its key
            access_until = min(access_until, key.expires_at)
            refresh_until = min(refresh_until, key.expires_at)
        scope = " ".join(key.scopes)
        claims = {
            "iss": self._issuer, "aud": AUDIENCE, "sub": str(key.id), "client_id": key.prefix,
            "scope": scope, "iat": now, "nbf": now, "exp": access_until,
            "jti": secrets.token_urlsafe(16), "fam": family_id,
        }  # fmt: skip
        signer = self._keyring.active
        token = jwt.encode(
            claims, signer.private_key, algorithm=ALGORITHM,
            headers={"kid": signer.kid, "typ": TOKEN_TYPE},
        )  # fmt: skip
        return TokenPair(token, access_until - now, refresh, refresh_until - now, scope)

    # -- checking -----------------------------------------------------------------------------

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a genuine, current access token of ours; TokenRefused otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _refused("malformed") from None
        # The header is attacker-controlled: it may only confirm what we expect.
        if header.get("alg") != ALGORITHM:
            raise _refused(f"algorithm {str(header.get('alg'))[:20]!r}")
        if header.get("typ") != TOKEN_TYPE:
            raise _refused("not an access token (typ)")
        kid = header.get("kid")
        key = self._keyring.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _refused("unknown kid")
        try:
            claims = jwt.decode(
                token, key.public_key, algorithms=[ALGORITHM], audience=AUDIENCE,
                issuer=self._issuer,
                # Times are checked below against the service's clock (tests set it).
                options={"require": list(_REQUIRED), "strict_aud": True, "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False},
            )  # fmt: skip
        except jwt.InvalidTokenError as exc:
            raise _refused(type(exc).__name__) from None
        for name in ("iat", "nbf", "exp", "fam"):
            if type(claims[name]) is not int:
                raise _refused(f"{name} is not an integer")
        if not all(isinstance(claims[name], str) for name in ("sub", "scope", "jti")):
            raise _refused("sub, scope and jti must be strings")
        now = self._licenses.now()
        if claims["exp"] + LEEWAY_SECONDS <= now:
            raise TokenRefused("expired", "The access token has expired.")
        if claims["nbf"] > now + LEEWAY_SECONDS or claims["iat"] > now + LEEWAY_SECONDS:
            raise _refused("not valid yet")
        if claims["exp"] - claims["iat"] > ACCESS_SECONDS:
            raise _refused("lifetime longer than issued")
        return claims

    async def authenticate(self, token: str) -> Authenticated:
        """The API key behind a genuine, current access token, with the token's scopes; the
        family and the key must still be live (one primary-key read)."""
        try:
            claims = self.decode(token)
        except TokenRefused as refused:
            log.info("access token refused: %s", refused.reason)
            return Authenticated(None, "expired" if refused.reason == "expired" else "invalid")
        async with self._licenses.db.read() as conn:
            row = await token_rows.family_for_access(conn, claims["fam"])
        if row is None or str(row["id"]) != claims["sub"]:
            return Authenticated(None, "invalid")
        if row.pop("family_revoked_at") is not None:
            return Authenticated(None, "revoked")
        key = key_from_row(row)
        state = key.state(self._licenses.now())
        if state is not KeyState.ACTIVE:
            return Authenticated(None, state.value)
        return Authenticated(replace(key, scopes=tuple(claims["scope"].split())))


_REFRESH_DETAIL = {
    "invalid": "The refresh token is not valid.",
    "expired": "The refresh token has expired; exchange the API key again.",
    "revoked": "The refresh token's family was revoked; exchange the API key again.",
    "reused": "This refresh token was already used: its whole family is now revoked. "
    "Exchange the API key again.",
}


def _refused(reason: str) -> TokenRefused:
    return TokenRefused(reason, "The access token is not valid.")

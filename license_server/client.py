"""Reference client for the native verification protocol (v1), in Python.

Standalone (aiohttp, cryptography, pyjwt; nothing else of this package), so that a Python
product can copy it, and so that the tests speak to the server exactly as a module would.
It verifies everything DESIGN.md says a module must verify before trusting a byte:

1. the `License-Signature` header: Ed25519 over the exact body, with a key id it already knows
   (keys ship with the product; they are never fetched from the server it is checking);
2. the echoed `nonce` equals the one it sent (no replayed answers);
3. `server_time` is within `max_skew` of its own clock (no stale answers);
4. for `active`, the `local_key` JWT: signature and kid, `exp`, the `lkh` of its own key, and
   the bound domain; then it may be cached and trusted offline until `exp`, and in grace
   until `grace_until` when the server cannot be reached.

Statuses a caller can branch on: active, invalid, expired, suspended, revoked, grace,
unreachable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import idna
import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

DECISIONS = frozenset({"active", "invalid", "expired", "suspended", "revoked"})
_HEADER = re.compile(r'(\w+)="([^"]*)"')

# A JWS verifier that accepts both names of the algorithm (RFC 8037 "EdDSA", RFC 9864 "Ed25519").
_JWS = jwt.PyJWS()
_JWS.register_algorithm("Ed25519", OKPAlgorithm())
_ALGORITHMS = ["EdDSA", "Ed25519"]


class AnswerRejected(Exception):
    """An answer (or local key) failed verification; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckResult:
    status: str  # active | invalid | expired | suspended | revoked | grace | unreachable
    reason: str
    license: dict | None = None
    local_key: str | None = None
    claims: dict | None = None
    http_status: int | None = None


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """kid -> public key, from a JWKS document the vendor ships with the product."""
    keys = {}
    for entry in jwks["keys"]:
        if entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519":
            keys[entry["kid"]] = Ed25519PublicKey.from_public_bytes(b64url_decode(entry["x"]))
    return keys


def normalise_domain(domain: str) -> str:
    """The server's comparison form: lower case, punycode, no scheme, port, path, www."""
    host = domain.strip().lower()
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host).split("/")[0].split("@")[-1]
    if not host.startswith("["):
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.strip("[]").rstrip(".")
    if host.isascii() is False:
        host = idna.encode(host, uts46=True).decode()
    while host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    return host


def license_key_hash(license_key: str) -> str:
    digest = hashlib.sha256(license_key.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def parse_signature_header(value: str) -> tuple[str, bytes]:
    params = dict(_HEADER.findall(value))
    if params.get("algorithm") != "ed25519" or "keyid" not in params or "signature" not in params:
        raise AnswerRejected("tampered", "malformed License-Signature header")
    try:
        return params["keyid"], base64.b64decode(params["signature"], validate=True)
    except ValueError:
        raise AnswerRejected("tampered", "signature is not base64") from None


def verify_answer(
    body: bytes,
    signature: str | None,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    nonce: str,
    now: float,
    max_skew: float = 300,
) -> dict[str, Any]:
    """The answer's JSON after checks 1-3; raises AnswerRejected otherwise."""
    if not signature:
        raise AnswerRejected("tampered", "answer is not signed")
    kid, raw = parse_signature_header(signature)
    key = public_keys.get(kid)
    if key is None:
        raise AnswerRejected("unknown_key_id", f"answer signed with unknown key {kid!r}")
    try:
        key.verify(raw, body)
    except InvalidSignature:
        raise AnswerRejected("tampered", "signature does not match the body") from None
    document = json.loads(body)
    if not hmac.compare_digest(str(document.get("nonce", "")), nonce):
        raise AnswerRejected("bad_nonce", "answer is for another request")
    server_time = document.get("server_time")
    if not isinstance(server_time, int | float) or abs(server_time - now) > max_skew:
        raise AnswerRejected("stale_response", "answer is not fresh")
    return document


def verify_local_key(
    token: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    license_key: str,
    domain: str,
    now: float,
    allow_expired: bool = False,
) -> dict[str, Any]:
    """The local key's claims after check 4; raises AnswerRejected('bad_local_key')."""
    try:
        header = jwt.get_unverified_header(token)
        key = public_keys.get(header.get("kid", ""))
        if key is None:
            raise AnswerRejected("bad_local_key", "local key signed with an unknown key")
        claims = json.loads(_JWS.decode(token, key=key, algorithms=_ALGORITHMS))
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise AnswerRejected("bad_local_key", f"local key does not verify: {exc}") from None
    if not hmac.compare_digest(str(claims.get("lkh", "")), license_key_hash(license_key)):
        raise AnswerRejected("bad_local_key", "local key belongs to another license key")
    if claims.get("domain") != domain:
        raise AnswerRejected("bad_local_key", "local key is bound to another domain")
    if not allow_expired and not now < claims.get("exp", 0):
        raise AnswerRejected("bad_local_key", "local key has expired")
    return claims


def offline_status(claims: Mapping[str, Any], now: float) -> str:
    """What a verified cached local key is worth while the server cannot be reached."""
    if now < claims["exp"]:
        return "active"
    if now < claims.get("grace_until", 0):
        return "grace"
    return "unreachable"


class LicenseClient:
    def __init__(
        self,
        base_url: str,
        public_keys: Mapping[str, Ed25519PublicKey],
        *,
        session: aiohttp.ClientSession,
        max_skew: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = base_url.rstrip("/") + "/api/v1/verify"
        self.public_keys = dict(public_keys)
        self.session = session
        self.max_skew = max_skew
        self.clock = clock

    async def check(
        self,
        license_key: str,
        domain: str,
        *,
        ip: str = "",
        directory: str = "",
        product: str = "",
        cached_local_key: str | None = None,
    ) -> CheckResult:
        nonce = secrets.token_urlsafe(24)
        fields = {
            "license_key": license_key,
            "domain": domain,
            "ip": ip,
            "directory": directory,
            "product": product,
            "client_version": "python-reference-1",
            "nonce": nonce,
        }
        try:
            async with self.session.post(self.url, data=fields) as response:
                body = await response.read()
                signature = response.headers.get("License-Signature")
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            return self._offline(cached_local_key, license_key, domain, "connect_failed")
        try:
            document = verify_answer(
                body, signature, self.public_keys, nonce=nonce, now=self.clock(),
                max_skew=self.max_skew,
            )  # fmt: skip
        except AnswerRejected as exc:
            return CheckResult("invalid", exc.reason, http_status=status)
        if status != 200 or document.get("status") not in DECISIONS:
            # Undecided (400/413/415/429/5xx): like an outage, fall back to the cache.
            reason = "rate_limited" if status == 429 else "request_rejected"
            return self._offline(cached_local_key, license_key, domain, reason, status)
        return self._decision(document, license_key, domain, status)

    def _decision(
        self, document: dict, license_key: str, domain: str, http_status: int
    ) -> CheckResult:
        status, reason = document["status"], document.get("reason", "")
        if status != "active":
            return CheckResult(status, reason, document.get("license"), http_status=http_status)
        try:
            claims = verify_local_key(
                str(document.get("local_key", "")),
                self.public_keys,
                license_key=license_key,
                domain=normalise_domain(domain),
                now=self.clock(),
            )
        except AnswerRejected as exc:
            return CheckResult("invalid", exc.reason, http_status=http_status)
        token = document["local_key"]
        return CheckResult(status, reason, document.get("license"), token, claims, http_status)

    def _offline(
        self,
        cached: str | None,
        license_key: str,
        domain: str,
        reason: str,
        http_status: int | None = None,
    ) -> CheckResult:
        if cached:
            try:
                claims = verify_local_key(
                    cached,
                    self.public_keys,
                    license_key=license_key,
                    domain=normalise_domain(domain),
                    now=self.clock(),
                    allow_expired=True,
                )
            except AnswerRejected:
                return CheckResult("unreachable", reason, http_status=http_status)
            return CheckResult(offline_status(claims, self.clock()), reason, None, cached, claims)
        return CheckResult("unreachable", reason, http_status=http_status)

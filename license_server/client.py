"""Reference client for the native verification protocol (v1), in Python.

Standalone (aiohttp, cryptography, pyjwt; nothing else of this package), so that a Python
product can copy it, and so that the tests speak to the server exactly as a module would.
It verifies everything DESIGN.md says a module must verify before trusting a byte:

1. the `License-Signature` header: Ed25519 over the exact body, with a key id it already knows
   (keys ship with the product; they are never fetched from the server it is checking);
2. the echoed `nonce` equals the one it sent (no replayed answers);
3. `server_time` is within `max_skew` of its own clock (no stale answers);
4. for `active`, the `local_key` JWT: signature and kid, `exp`, the `lkh` of its own key,
   the bound domain and (if given) the product, case-insensitively; then it may be cached
   and trusted offline until `exp`, and in grace until `grace_until` when the server cannot
   be reached.

An answer that fails check 1, 2 or 3 is no answer at all: it is treated exactly like an
unreachable server (the cached local key while it is valid, then grace, then unreachable),
never as a refusal, so that whoever can strip or alter one header between a module and the
server cannot switch a paying site off. Such a result has `unverified=True` and its `reason`
names the failed check (`tampered`, `unknown_key_id`, `bad_nonce`, `stale_response`).

Statuses a caller can branch on: active, invalid, expired, suspended, revoked, grace,
unreachable. There is no back-off in this class: the caller keeps the cached local key and
decides how often to call `check()`.

Domains are compared in the server's canonical form. `normalise_domain` is a copy of
license_server/licensing/domains.py (this module may not import the server);
tests/test_normaliser_parity.py keeps the two equal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
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
# Reasons for an answer that failed checks 1-3: it proves nothing, so it counts as an outage.
UNVERIFIED = frozenset({"tampered", "unknown_key_id", "bad_nonce", "stale_response"})
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
    # True when an answer came but failed its signature, nonce or freshness check: the
    # status then comes from the cache (or grace, or unreachable), not from the server.
    unverified: bool = False


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """kid -> public key, from a JWKS document the vendor ships with the product."""
    keys = {}
    for entry in jwks["keys"]:
        if entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519":
            keys[entry["kid"]] = Ed25519PublicKey.from_public_bytes(b64url_decode(entry["x"]))
    return keys


class InvalidDomain(ValueError):
    """A value is not a hostname or IP address (the server refuses it too)."""


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
_PORT = re.compile(r":[0-9]{1,5}")
_LDH_LABEL = re.compile(r"[a-z0-9-]+")
_NUMERIC_LABEL = re.compile(r"[0-9]+")


def _split_authority(raw: str) -> tuple[str, bool]:
    text = raw.strip().lower()
    scheme = _SCHEME.match(text)  # anchored: a "://" later on is not a scheme
    text = text[scheme.end() if scheme else 0 :].removeprefix("//")
    for delimiter in "/?#":  # the authority ends here (RFC 3986 section 3.2)
        text = text.partition(delimiter)[0]
    text = text.rpartition("@")[2]  # userinfo ends at its last "@"
    if text.startswith("["):
        inner, bracket, port = text[1:].partition("]")
        if not bracket:
            raise InvalidDomain("unclosed '['")
        _check_port(port)
        return inner, True
    if text.count(":") == 1:  # more than one colon: a bare IPv6 address
        text, colon, port = text.partition(":")
        _check_port(colon + port)
    return text, False


def _check_port(suffix: str) -> None:
    if suffix and not (_PORT.fullmatch(suffix) and int(suffix[1:]) <= 65535):
        raise InvalidDomain("bad port")


def _canonical_ip(text: str) -> str:
    if "%" in text:  # zone ids only mean something on the sending machine
        raise InvalidDomain("zone ids are not allowed")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidDomain("malformed IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _canonical_name(host: str) -> str:
    name = host.rstrip(".")
    labels = name.split(".")
    # Plain ASCII skips IDNA, which would refuse real RFC 1123 names such as "r3---sn-abc".
    if not name.isascii() or any(label.startswith("xn--") for label in labels):
        try:  # UTS #46 with UseSTD3ASCIIRules, IDNA2008 validity (RFC 5891)
            name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii").rstrip(".")
        except (idna.IDNAError, UnicodeError, ValueError):
            raise InvalidDomain("not a valid internationalised name") from None
        labels = name.split(".")
    if not name or len(name) > 253:
        raise InvalidDomain("empty or longer than 253 characters")
    for label in labels:
        if not 0 < len(label) <= 63 or not _LDH_LABEL.fullmatch(label):
            raise InvalidDomain("labels are 1-63 letters, digits and hyphens")
        if label[0] == "-" or label[-1] == "-":
            raise InvalidDomain("label starts or ends with a hyphen")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):  # only a dotted IPv4 address ends in digits
        return _canonical_ip(name)
    while labels[0] == "www" and len(labels) > 2:  # loop: "www.www.x.com" is "x.com"
        labels = labels[1:]
    return ".".join(labels)


def normalise_domain(domain: str) -> str:
    """The server's comparison form of a host or URL; raises InvalidDomain like the server.

    Lower case, no scheme, userinfo, port, path, query, fragment or trailing dot, A-labels
    (UTS #46), leading "www." dropped while two labels remain, IP addresses in the canonical
    text of `ipaddress` (IPv4-mapped IPv6 as IPv4; short forms such as 127.1 refused).
    """
    host, bracketed = _split_authority(domain)
    if bracketed or ":" in host:
        return _canonical_ip(host)
    return _canonical_name(host)


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
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise AnswerRejected("bad_response", "the signed answer is not a JSON object")
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
    product: str = "",
    allow_expired: bool = False,
) -> dict[str, Any]:
    """The local key's claims after check 4; raises AnswerRejected('bad_local_key').

    `domain` is already normalised. Product codes are case-insensitive (the server stores
    them in lower case), so `aud` is compared after folding.
    """
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
    if product and str(claims.get("aud", "")).lower() != product.strip().lower():
        raise AnswerRejected("bad_local_key", "local key is for another product")
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
    """Phones home for one check; the caller keeps the local key it returns for outages."""

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
        try:
            canonical = normalise_domain(domain)
        except InvalidDomain:
            # The server would refuse it too; never send a domain that cannot be bound.
            return CheckResult("invalid", "no_domain")
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
        offline = _Offline(self, cached_local_key, license_key, canonical, product)
        try:
            async with self.session.post(self.url, data=fields) as response:
                body = await response.read()
                signature = response.headers.get("License-Signature")
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            return offline.result("connect_failed")
        try:
            document = verify_answer(
                body, signature, self.public_keys, nonce=nonce, now=self.clock(),
                max_skew=self.max_skew,
            )  # fmt: skip
        except AnswerRejected as exc:
            # Not an answer from the server: an outage, not a refusal (see the docstring).
            return offline.result(exc.reason, status, unverified=exc.reason in UNVERIFIED)
        if status != 200 or document.get("status") not in DECISIONS:
            # Undecided (400/413/415/429/5xx): like an outage, fall back to the cache.
            reason = "rate_limited" if status == 429 else "request_rejected"
            return offline.result(reason, status)
        return self._decision(document, license_key, canonical, product, status)

    def _decision(
        self, document: dict, license_key: str, domain: str, product: str, http_status: int
    ) -> CheckResult:
        status, reason = document["status"], document.get("reason", "")
        if status != "active":
            return CheckResult(status, reason, document.get("license"), http_status=http_status)
        try:
            claims = verify_local_key(
                str(document.get("local_key", "")),
                self.public_keys,
                license_key=license_key,
                domain=domain,
                now=self.clock(),
                product=product,
            )
        except AnswerRejected as exc:
            return CheckResult("invalid", exc.reason, http_status=http_status)
        token = document["local_key"]
        return CheckResult(status, reason, document.get("license"), token, claims, http_status)


@dataclass(frozen=True)
class _Offline:
    """What the cached local key is worth when no trustworthy answer came."""

    client: LicenseClient
    cached: str | None
    license_key: str
    domain: str
    product: str

    def result(
        self, reason: str, http_status: int | None = None, *, unverified: bool = False
    ) -> CheckResult:
        if self.cached:
            now = self.client.clock()
            try:
                claims = verify_local_key(
                    self.cached,
                    self.client.public_keys,
                    license_key=self.license_key,
                    domain=self.domain,
                    now=now,
                    product=self.product,
                    allow_expired=True,
                )
            except AnswerRejected:
                pass
            else:
                status = offline_status(claims, now)
                if status != "unreachable":
                    return CheckResult(
                        status, reason, None, self.cached, claims, http_status, unverified
                    )
        return CheckResult("unreachable", reason, http_status=http_status, unverified=unverified)

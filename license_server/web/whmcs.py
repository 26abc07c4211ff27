"""`POST /modules/servers/licensing/verify.php`: answers like the WHMCS Licensing Addon.

Modules in the field embed WHMCS's sample `check_license()` (or older, hand-trimmed copies of
it) and cannot be changed overnight; this endpoint lets a vendor point them here unchanged
(DESIGN.md "WHMCS Licensing Addon compatibility"). The decision is the native one
(`Verifier.check`, with WHMCS-style IP and directory binding); only the wire format differs:

- HTTP 200 and plain `<tag>value</tag>` lines for every decision; only Active, Invalid,
  Expired and Suspended ever go on the wire (revoked answers Invalid).
- Bindings are echoed exactly as the module sent them (`validdomain` = `d,www.d`), because the
  module compares its own SERVER_NAME / SERVER_ADDR / dirname(__FILE__) against them when it
  re-reads its local key; anything else makes it phone home on every page load.
- `md5hash` = md5(secret + check_token), as the sample checks. Weak by design (the secret ships
  in every copy of the module): the signature tag is the real protection for upgraded modules.
- A rate-limited check gets 429 with an EMPTY body: every variant of the sample treats an empty
  answer as "remote check failed" and falls back to its local key, whereas a body without a
  status tag would read as not-Active and could switch a paying customer off.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import unquote

from aiohttp import web

from license_server import appkeys
from license_server.licensing.decision import Answer, Facts
from license_server.licensing.domains import (
    InvalidHost,
    normalise_directory,
    normalise_domain,
    normalise_ip,
)
from license_server.licensing.models import License
from license_server.licensing.verifier import Outcome, RawBinding
from license_server.web.attempts import new_attempt, record
from license_server.web.rate_limit import Limited, limited_headers
from license_server.web.whmcs_format import render

MISMATCH_MESSAGES = {
    "domain_not_allowed": "Domain Invalid",
    "seat_limit": "Domain Invalid",
    "ip_not_allowed": "IP Address Invalid",
    "directory_not_allowed": "Directory Invalid",
}
_WIRE_STATUS = {
    Answer.ACTIVE: "Active",
    Answer.EXPIRED: "Expired",
    Answer.SUSPENDED: "Suspended",
}
_MAX_FIELD = 1024


async def verify_php(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    app = request.app
    runtime = app[appkeys.RUNTIME]
    limiter = app[appkeys.RATE_LIMITER]
    source_ip = app[appkeys.CLIENT_IP](request)
    attempt = new_attempt(request, source_ip, "whmcs")

    async def too_many(limited: Limited) -> web.Response:
        attempt.result, attempt.reason = "rate_limited", limited.policy
        return await _answer(request, attempt, started, b"", 429, limited_headers(limited))

    limited = await limiter.before_reading(source_ip)
    if limited:
        return await too_many(limited)

    fields = await _read_fields(request)
    key = fields.get("licensekey", "").strip()
    raw = RawBinding(fields.get("domain", "").strip(), fields.get("ip", "").strip(),
                     fields.get("dir", "").strip())  # fmt: skip
    check_token = fields.get("check_token", "")
    attempt.domain_raw, attempt.reported_ip, attempt.directory = raw.domain, raw.ip, raw.directory
    if not key:
        attempt.result, attempt.reason = "invalid", "missing_key"
        limited = await limiter.after_decision("missing_key", source_ip)
        if limited:
            return await too_many(limited)
        return await _decided(request, attempt, started, [("status", "Invalid")], check_token)

    limited = await limiter.for_key(lambda: runtime.verifier.rate_limit_id(key))
    if limited:
        return await too_many(limited)

    facts, bad_field = _facts(raw, source_ip)
    if facts is None:
        attempt.result, attempt.reason = "invalid", f"{bad_field}_not_allowed"
        tags = [("status", "Invalid"), ("message", MISMATCH_MESSAGES[attempt.reason])]
        return await _decided(request, attempt, started, tags, check_token)
    attempt.domain = facts.domain

    outcome = await runtime.verifier.check(key, facts, raw, bind_ip_and_dir=True)
    verdict = outcome.verdict
    limited = await limiter.after_decision(verdict.reason, source_ip)
    if limited:
        return await too_many(limited)
    attempt.result, attempt.reason = verdict.answer.value, verdict.reason
    attempt.license_id = outcome.license.id if outcome.license else None
    attempt.key_hash = None if outcome.license else outcome.key_hash
    attempt.product = outcome.license.product.code if outcome.license else ""
    tags = await _tags(request, outcome, facts, raw, check_token)
    return await _decided(request, attempt, started, tags, check_token)


async def _read_fields(request: web.Request) -> dict[str, str]:
    """Form fields, urlencoded (trailing `&` fine) or multipart; anything else reads empty.

    The key is taken from the raw urlencoded body with `unquote`, not `unquote_plus`: some
    modules post it without URL-encoding, and a legacy key containing `+` must survive.
    """
    if request.content_type == "multipart/form-data":
        form = await request.post()
        return {k: v[:_MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
    if request.content_type not in ("application/x-www-form-urlencoded", ""):
        return {}
    body = (await request.read()).decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    for pair in body.split("&"):
        name, _, value = pair.partition("=")
        name = unquote(name.replace("+", " "))
        if not name or name in fields:
            continue
        decoded = unquote(value) if name == "licensekey" else unquote(value.replace("+", " "))
        fields[name] = decoded[:_MAX_FIELD]
    return fields


def _facts(raw: RawBinding, source_ip: str) -> tuple[Facts | None, str]:
    try:
        domain = normalise_domain(raw.domain)
    except InvalidHost:
        return None, "domain"
    try:
        ip = normalise_ip(raw.ip) if raw.ip else source_ip
    except InvalidHost:
        return None, "ip"
    try:
        directory = normalise_directory(raw.directory) if raw.directory else ""
    except ValueError:
        return None, "directory"
    return Facts(domain, ip, directory, ""), ""


async def _tags(
    request: web.Request, outcome: Outcome, facts: Facts, raw: RawBinding, check_token: str
) -> list[tuple[str, object]]:
    verdict, license = outcome.verdict, outcome.license
    wire = _WIRE_STATUS.get(verdict.answer)
    if license is None or wire is None:
        tags: list[tuple[str, object]] = [("status", "Invalid")]
        message = MISMATCH_MESSAGES.get(verdict.reason)
        return [*tags, ("message", message)] if message else tags
    runtime = request.app[appkeys.RUNTIME]
    tags = [
        ("status", wire),
        ("registeredname", license.licensee_name),
        ("companyname", license.licensee_company),
        ("email", license.licensee_email),
        ("serviceid", license.whmcs_service_id or license.id),
        ("productid", license.product.id),
        ("productname", license.product.name),
        ("regdate", _date(license.created_at)),
        ("nextduedate", _date(license.expires_at - 1) if license.expires_at else "0000-00-00"),
        ("billingcycle", license.billing_cycle or ("" if license.expires_at else "One Time")),
        ("validdomain", ",".join(_valid_domains(license, raw))),
        ("validip", ",".join(_echo(license, "ip", raw.ip or facts.ip))),
        ("validdirectory", ",".join(_echo(license, "directory", raw.directory))),
        ("configoptions", ""),
        ("customfields", ""),
        ("addons", ""),
    ]
    secret = await runtime.verifier.whmcs_secret(license.product)
    if secret is not None:
        # WHMCS's protocol, not our security: the answer's real protection is its Ed25519 tag.
        digest = hashlib.md5((secret + check_token).encode(), usedforsecurity=False).hexdigest()
        tags.append(("md5hash", digest))
    return tags


def _valid_domains(license: License, raw: RawBinding) -> list[str]:
    """`d,www.d` for every bound domain, as the module sent it (WHMCS's own format)."""
    bound = [b.raw_value for b in license.bindings_of("domain")]
    sent = [raw.domain] if license.product.allow_domain_conflict or not bound else bound
    out: list[str] = []
    for value in sent:
        bare = value[4:] if value.lower().startswith("www.") else value
        for variant in (bare, f"www.{bare}"):
            if variant not in out:
                out.append(variant)
    return out


def _echo(license: License, kind: str, sent: str) -> list[str]:
    """The bound values, or what the module sent when nothing binds this kind: either way the
    module finds its own value in its local key and does not phone home on every page."""
    conflict_allowed = {
        "ip": license.product.allow_ip_conflict,
        "directory": license.product.allow_directory_conflict,
    }[kind]
    bound = [] if conflict_allowed else [b.raw_value for b in license.bindings_of(kind)]
    return bound or ([sent] if sent else [])


def _date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


async def _decided(
    request: web.Request,
    attempt,
    started: int,
    tags: list[tuple[str, object]],
    check_token: str,
) -> web.Response:
    keyring = request.app[appkeys.RUNTIME].keyring
    return await _answer(request, attempt, started, render(tags, keyring, check_token), 200)


async def _answer(
    request: web.Request, attempt, started: int, body: bytes, status: int, headers=None
) -> web.Response:
    if not await record(request, attempt, started):
        # Not recorded means not acknowledged; an empty 503 reads as "remote check failed".
        body, status, headers = b"", 503, {"Retry-After": "5"}
    return web.Response(
        status=status, body=body, content_type="text/plain", charset="utf-8", headers=headers
    )

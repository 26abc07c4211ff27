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
from license_server.web import request_body
from license_server.web.pipeline import CheckInput, run_check
from license_server.web.problems import problem_response
from license_server.web.rate_limit import Limited, limited_headers
from license_server.web.request_body import Malformed
from license_server.web.signing import SIGNED_IN_BODY
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


class WhmcsEndpoint:
    name = "whmcs"

    async def parse(self, request: web.Request, source_ip: str) -> CheckInput:
        fields = await _read_fields(request)
        raw = RawBinding(fields.get("domain", "").strip(), fields.get("ip", "").strip(),
                         fields.get("dir", "").strip())  # fmt: skip
        facts, bad_field = _facts(raw, source_ip)
        return CheckInput(
            key=fields.get("licensekey", "").strip(),
            raw=raw,
            facts=facts,
            bad_field=bad_field,
            bind_ip_and_dir=True,
            extra=fields.get("check_token", ""),
        )

    async def decided(
        self, request: web.Request, check: CheckInput, outcome: Outcome
    ) -> web.Response:
        tags = await _tags(request, outcome, check.facts, check.raw, check.extra)
        keyring = request.app[appkeys.RUNTIME].keyring
        response = _text(200, render(tags, keyring, check.extra))
        # The <licensesignature> tag already signs every byte before it and the module's
        # check_token: a second signature over the same bytes would only cost CPU.
        response[SIGNED_IN_BODY] = True
        return response

    def limited(
        self, request: web.Request, check: CheckInput | None, limited: Limited
    ) -> web.Response:
        # An EMPTY body: every variant of the sample falls back to its local key on it.
        return _text(429, b"", limited_headers(limited))

    def malformed(self, request: web.Request, problem: Malformed) -> web.Response:
        # No module posts such a body; a problem document says what was wrong. The sample
        # finds no status tag in it and treats the check as failed, not as Invalid.
        return problem_response(
            problem.status,
            problem.title,
            problem.detail,
            slug="invalid-request" if problem.status == 400 else None,
            errors=problem.errors,
        )

    def unavailable(self) -> web.Response:
        # Not recorded means not acknowledged; an empty 503 reads as "remote check failed".
        return _text(503, b"", {"Retry-After": "5"})


ENDPOINT = WhmcsEndpoint()


async def verify_php(request: web.Request) -> web.Response:
    return await run_check(request, ENDPOINT)


async def _read_fields(request: web.Request) -> dict[str, str]:
    """Form fields, urlencoded (trailing `&` fine; no Content-Type read as urlencoded) or
    multipart; a field given twice is refused (no module sends one twice).

    The key is taken from the raw urlencoded body with `unquote`, not `unquote_plus`: some
    modules post it without URL-encoding, and a legacy key containing `+` must survive.
    """
    timeout = request.app[appkeys.SETTINGS].verify.body_read_timeout_seconds
    if request.content_type == request_body.MULTIPART:
        fields = await request_body.read_multipart(request, timeout)
        return {name: value[:_MAX_FIELD] for name, value in fields.items()}
    if request.content_type not in (request_body.URLENCODED, "application/octet-stream", ""):
        raise Malformed(
            415,
            "Unsupported Media Type",
            "Send application/x-www-form-urlencoded or multipart/form-data.",
            "http_415",
        )
    body = await request_body.read_body_once(request, timeout)
    return request_body.parse_urlencoded(body, literal_plus=("licensekey",), max_value=_MAX_FIELD)


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


def _text(status: int, body: bytes, headers=None) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="text/plain", charset="utf-8", headers=headers
    )

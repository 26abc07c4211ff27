"""`POST /api/v1/verify`: the native phone-home protocol (DESIGN.md, v1).

Thin on purpose: rate limits, parse and validate (pydantic), ask the verifier, record the
attempt, answer. HTTP 200 for every decision (valid or not); 400/413/415/429 for a request that
could not be decided, as RFC 9457 problem documents. The signing middleware signs every body.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt
from license_server.licensing.decision import Answer
from license_server.licensing.verifier import Outcome
from license_server.web.attempts import new_attempt, record
from license_server.web.problems import problem_body
from license_server.web.rate_limit import Limited, limited_headers
from license_server.web.verify_input import BadBody, VerifyRequest, field_errors, read_fields


async def verify(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    app = request.app
    source_ip = app[appkeys.CLIENT_IP](request)
    limiter = app[appkeys.RATE_LIMITER]
    runtime = app[appkeys.RUNTIME]
    server_time = runtime.licenses.now()  # one clock for decisions, tokens and answers
    attempt = new_attempt(request, source_ip, "native")

    async def answer(status: int, body: dict[str, Any], headers=None) -> web.Response:
        if not await record(request, attempt, started):
            # Not recorded means not acknowledged: the module retries later.
            body = problem_body(503, "Service Unavailable", "Try again shortly.")
            status, headers = 503, {"Retry-After": "5"}
        return _json(status, body, headers)

    async def too_many(limited: Limited, echo: dict[str, Any] | None = None) -> web.Response:
        attempt.result, attempt.reason = "rate_limited", limited.policy
        return await answer(429, _too_many(limited) | (echo or {}), limited_headers(limited))

    limited = await limiter.before_reading(source_ip)
    if limited:
        return await too_many(limited)

    fields: dict[str, Any] = {}
    try:
        fields = await read_fields(request)
        checked = VerifyRequest.model_validate(fields)
    except web.HTTPException as exc:  # 413 / 415 from reading the body
        attempt.result, attempt.reason = "malformed", f"http_{exc.status}"
        return await answer(exc.status, problem_body(exc.status, exc.reason, exc.text or ""))
    except (BadBody, ValidationError) as exc:
        attempt.result, attempt.reason = "malformed", "invalid_fields"
        errors = [{"field": "body", "message": str(exc)}]
        if isinstance(exc, ValidationError):
            errors = field_errors(exc)
            _fill_from_raw(attempt, fields)
        return await answer(400, _invalid(errors, fields, server_time))

    facts = checked.facts(source_ip)
    _fill_from_request(attempt, checked, facts)
    echo = {"nonce": checked.nonce, "server_time": server_time}
    limited = await limiter.for_key(lambda: runtime.verifier.rate_limit_id(checked.license_key))
    if limited:
        return await too_many(limited, echo)

    outcome = await runtime.verifier.check(checked.license_key, facts, checked.raw())
    verdict = outcome.verdict
    limited = await limiter.after_decision(verdict.reason, source_ip)
    if limited:
        return await too_many(limited, echo)
    attempt.result, attempt.reason = verdict.answer.value, verdict.reason
    attempt.license_id = outcome.license.id if outcome.license else None
    attempt.key_hash = None if outcome.license else outcome.key_hash
    body = _decision(outcome, checked, server_time)
    if verdict.answer is Answer.ACTIVE:
        body["local_key"] = runtime.verifier.local_key(outcome.license, facts, checked.license_key)
    return await answer(200, body)


def _decision(outcome: Outcome, checked: VerifyRequest, server_time: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": outcome.verdict.answer.value,
        "reason": outcome.verdict.reason,
        "nonce": checked.nonce,
        "server_time": server_time,
    }
    if outcome.verdict.note:  # why a host used no seat (README: "note")
        body["note"] = outcome.verdict.note
    license = outcome.license
    if license is not None:  # facts only for a genuine key: its holder may see them
        body["license"] = {
            "product": license.product.code,
            "licensee": license.licensee_name,
            "company": license.licensee_company,
            "expires_at": _iso(license.expires_at),
            "domains": [b.value for b in license.bindings_of("domain")],
            "ips": list(license.rules_of("ip")) + [b.value for b in license.bindings_of("ip")],
            "directories": list(license.rules_of("directory"))
            + [b.value for b in license.bindings_of("directory")],
            "features": list(license.product.features),
            "seats": license.seats,
        }
    return body


def _invalid(
    errors: list[dict[str, str]], fields: dict[str, Any], server_time: int
) -> dict[str, Any]:
    body = problem_body(
        400,
        "Invalid verification request",
        "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        slug="invalid-request",
        errors=errors,
    )
    nonce = fields.get("nonce")
    if isinstance(nonce, str) and 16 <= len(nonce) <= 64:
        # Echoed so that a client can still match this signed refusal to its request.
        body.update(nonce=nonce, server_time=server_time)
    return body


def _too_many(limited: Limited) -> dict[str, Any]:
    return problem_body(
        429,
        "Too Many Requests",
        f"Rate limit '{limited.policy}' reached; retry in {limited.retry_after} s.",
        slug="rate-limited",
    )


def _iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _json(status: int, body: dict[str, Any], headers=None) -> web.Response:
    content_type = "application/json" if status == 200 else "application/problem+json"
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type=content_type,
        headers=headers,
    )


def _fill_from_request(attempt: Attempt, checked: VerifyRequest, facts) -> None:
    attempt.reported_ip = checked.ip
    attempt.domain_raw = checked.domain
    attempt.domain = facts.domain
    attempt.directory = checked.directory
    attempt.product = checked.product
    attempt.client_version = checked.client_version


def _fill_from_raw(attempt: Attempt, fields: dict[str, Any]) -> None:
    """Keep what can be kept of a malformed request, cut to size, never the key itself."""

    def text(name: str, limit: int) -> str:
        value = fields.get(name)
        return value[:limit] if isinstance(value, str) else ""

    attempt.domain_raw = text("domain", 253)
    attempt.reported_ip = text("ip", 64)
    attempt.directory = text("directory", 1024)
    attempt.product = text("product", 32)
    attempt.client_version = text("client_version", 64)

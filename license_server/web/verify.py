"""`POST /api/v1/verify`: the native phone-home protocol (DESIGN.md, v1).

Only parsing (pydantic) and rendering live here; the pipeline (`web.pipeline`) does the rest,
the same for the WHMCS endpoint. HTTP 200 for every decision (valid or not); 400/408/413/415/
429/503 for a request that could not be decided, as RFC 9457 problem documents. The signing
middleware signs every body.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.decision import Answer
from license_server.licensing.verifier import Outcome
from license_server.web.pipeline import CheckInput, run_check
from license_server.web.problems import problem_body
from license_server.web.rate_limit import Limited, limited_headers
from license_server.web.request_body import Malformed
from license_server.web.verify_input import VerifyRequest, field_errors, read_fields


class NativeEndpoint:
    name = "native"

    async def parse(self, request: web.Request) -> CheckInput:
        settings = request.app[appkeys.SETTINGS].verify
        fields = await read_fields(request, settings.body_read_timeout_seconds)
        try:
            checked = VerifyRequest.model_validate(fields)
        except ValidationError as exc:
            errors = field_errors(exc)
            raise Malformed(
                400,
                "Invalid verification request",
                "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                "invalid_fields",
                errors=errors,
                fields=fields,
            ) from None
        source_ip = request.app[appkeys.CLIENT_IP](request)
        return CheckInput(
            key=checked.license_key,
            raw=checked.raw(),
            facts=checked.facts(source_ip),
            client_version=checked.client_version,
            extra=checked.nonce,
        )

    async def decided(
        self, request: web.Request, check: CheckInput, outcome: Outcome
    ) -> web.Response:
        server_time = request.app[appkeys.RUNTIME].licenses.now()
        body = _decision(outcome, check.extra, server_time)
        if outcome.verdict.answer is Answer.ACTIVE:
            verifier = request.app[appkeys.RUNTIME].verifier
            body["local_key"] = verifier.local_key(outcome.license, check.facts, check.key)
        return _json(200, body)

    def limited(
        self, request: web.Request, check: CheckInput | None, limited: Limited
    ) -> web.Response:
        body = _too_many(limited)
        if check is not None:
            body.update(nonce=check.extra, server_time=request.app[appkeys.RUNTIME].licenses.now())
        return _json(429, body, limited_headers(limited))

    def malformed(self, request: web.Request, problem: Malformed) -> web.Response:
        body = problem_body(
            problem.status,
            problem.title,
            problem.detail,
            slug="invalid-request" if problem.status == 400 else None,
            errors=problem.errors,
        )
        nonce = problem.fields.get("nonce")
        if isinstance(nonce, str) and 16 <= len(nonce) <= 64:
            # Echoed so that a client can still match this signed refusal to its request.
            body.update(nonce=nonce, server_time=request.app[appkeys.RUNTIME].licenses.now())
        return _json(problem.status, body)

    def unavailable(self) -> web.Response:
        body = problem_body(503, "Service Unavailable", "Try again shortly.")
        return _json(503, body, {"Retry-After": "5"})


ENDPOINT = NativeEndpoint()


async def verify(request: web.Request) -> web.Response:
    return await run_check(request, ENDPOINT)


def _decision(outcome: Outcome, nonce: str, server_time: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": outcome.verdict.answer.value,
        "reason": outcome.verdict.reason,
        "nonce": nonce,
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

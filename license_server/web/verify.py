"""`POST /api/v1/verify`: the native phone-home protocol (DESIGN.md, v1).

Only parsing (pydantic) and rendering live here; the pipeline (`web.pipeline`) does the rest,
the same for the WHMCS endpoint. HTTP 200 for every decision (valid or not); 400/408/413/415/
429/503 for a request that could not be decided, as RFC 9457 problem documents. The signing
middleware signs every body.
"""

from __future__ import annotations

import json
import time
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.decision import Answer
from license_server.licensing.verifier import Outcome
from license_server.web.middlewares import SecuredResponse
from license_server.web.pipeline import CheckInput, run_check
from license_server.web.problems import problem_body
from license_server.web.rate_limit import Limited, limited_headers
from license_server.web.request_body import Malformed
from license_server.web.verify_input import checked_input, field_errors, read_fields


class NativeEndpoint:
    name = "native"

    def __init__(self) -> None:
        self._answers = AnswerParts()

    async def parse(self, request: web.Request, source_ip: str) -> CheckInput:
        settings = request.app[appkeys.SETTINGS].verify
        fields = await read_fields(request, settings.body_read_timeout_seconds)
        try:
            return checked_input(fields, source_ip)
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

    async def decided(
        self, request: web.Request, check: CheckInput, outcome: Outcome
    ) -> web.Response:
        runtime = request.app[appkeys.RUNTIME]
        local_key = None
        if outcome.verdict.answer is Answer.ACTIVE:
            local_key = runtime.verifier.local_key(outcome.license, check.facts, check.key)
        head, tail = self._answers.parts(outcome, local_key)
        # The nonce passed VerifyRequest's pattern; encoded as json.dumps would all the same.
        nonce = encode_basestring_ascii(check.extra)
        body = f'{head}{nonce},"server_time":{runtime.licenses.now()}{tail}'.encode()
        return _json_bytes(200, body)

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


class AnswerParts:
    """The JSON of a decision but its nonce and server_time, built once per license revision,
    verdict and local key instead of once per check (issue #16: "answer bytes built once").

    The answer is `{"status", "reason", "nonce", "server_time", "note"?, "license"?,
    "local_key"?}`: everything before the nonce and after server_time depends only on the
    outcome and the (cached) local key, so those two parts are kept, and each check only
    joins them around its own nonce and time. The bytes are those of `json.dumps` of the whole
    document (`_decision`), which the tests compare. One entry per license (a new revision or
    verdict replaces it); refusals without a license by verdict.
    """

    SIZE = 10_000

    def __init__(self) -> None:
        self._by_license: dict[int, tuple] = {}
        self._by_verdict: dict[tuple, tuple[str, str]] = {}

    def parts(self, outcome: Outcome, local_key: str | None) -> tuple[str, str]:
        verdict, license = outcome.verdict, outcome.license
        if license is None:
            key = (verdict.answer, verdict.reason, verdict.note)
            parts = self._by_verdict.get(key)
            if parts is None:
                parts = _split(_decision(outcome, "", 0), local_key)
                self._remember(self._by_verdict, key, parts)
            return parts
        entry = self._by_license.get(license.id)
        if (
            entry is not None
            and entry[0] is license  # the cached object: any change makes a new one
            and entry[1] == local_key
            and entry[2] == verdict
        ):
            return entry[3]
        parts = _split(_decision(outcome, "", 0), local_key)
        self._remember(self._by_license, license.id, (license, local_key, verdict, parts))
        return parts

    def _remember(self, cache: dict, key, value) -> None:
        if len(cache) >= self.SIZE and key not in cache:
            del cache[next(iter(cache))]
        cache[key] = value


def _split(body: dict[str, Any], local_key: str | None) -> tuple[str, str]:
    """`body` (a `_decision`) as the text before the nonce's value and after server_time's."""
    if local_key is not None:
        body["local_key"] = local_key
    head = _dumps({"status": body.pop("status"), "reason": body.pop("reason")})
    del body["nonce"], body["server_time"]
    tail = _dumps(body)
    return head[:-1] + ',"nonce":', "}" if tail == "{}" else "," + tail[1:]


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


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
    return _json_bytes(status, _dumps(body).encode(), headers)


def _json_bytes(status: int, body: bytes, headers=None) -> web.Response:
    content_type = "application/json" if status == 200 else "application/problem+json"
    return SecuredResponse(status=status, body=body, content_type=content_type, headers=headers)


ENDPOINT = NativeEndpoint()


async def verify(request: web.Request) -> web.Response:
    return await run_check(request, ENDPOINT)

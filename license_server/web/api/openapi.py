"""The OpenAPI 3.1 document (`GET /api/openapi.json`) and its page (`GET /api/docs`).

Generated, never written by hand: the paths come from `routes.OPERATIONS` (the list the router
is built from) plus the verification endpoints below, the schemas from the very pydantic models
that validate requests and render answers (`models_json_schema`, JSON Schema 2020-12, which
OpenAPI 3.1 uses as is). The page is rendered on the server from the document with jinja2: no
script, nothing fetched from elsewhere, the admin's CSP (a per-request nonce for its style).
"""

from __future__ import annotations

import functools
import json
import secrets
from pathlib import Path
from typing import Any, Literal

import jinja2
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from license_server.licensing.models import Status
from license_server.web.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from license_server.web.api.models import Problem
from license_server.web.api.routes import OPERATIONS
from license_server.web.verify_input import VerifyRequest

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
PROBLEM_TITLES = {
    400: "Invalid request: `errors` names each bad field",
    401: "No API key, or one that is unknown, expired or revoked",
    403: "The API key lacks the scope of this operation",
    404: "No such resource",
    409: "Conflict with the resource's state, or the Idempotency-Key's request is still running",
    413: "Body too large",
    415: "Not application/json",
    422: "The Idempotency-Key was used for another request",
    429: "Rate limited: Retry-After and the RateLimit fields say when to come back",
}
COMMON_PROBLEMS = (400, 401, 403, 429)


# -- the verification endpoints (routed by web/routes.py, documented here) -----------------


class VerifiedLicense(BaseModel):
    product: str
    licensee: str
    company: str
    expires_at: str | None
    domains: list[str]
    ips: list[str]
    directories: list[str]
    features: list[str]
    seats: int


class VerifyAnswer(BaseModel):
    """A decision (HTTP 200, valid or not), signed in the License-Signature header."""

    status: Literal["active", "invalid", "expired", "suspended", "revoked"]
    reason: str = Field(description="Machine reason: unknown_key, domain_not_allowed, ...")
    nonce: str = Field(description="The request's nonce, echoed.")
    server_time: int
    note: str | None = None
    license: VerifiedLicense | None = Field(None, description="Only for a genuine key.")
    local_key: str | None = Field(None, description="For active: an EdDSA JWT to trust offline.")


class VerifyFieldProblem(BaseModel):
    field: str
    message: str


class VerifyProblem(BaseModel):
    """The verification endpoint's refusal: an RFC 9457 problem document whose `errors` name
    each bad field (no location or pointer: every field is in the one form), with the request's
    nonce and the server time echoed when the nonce was well-formed."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[VerifyFieldProblem] | None = None
    nonce: str | None = None
    server_time: int | None = None


class WhmcsVerifyForm(BaseModel):
    """The WHMCS Licensing Addon's form (unknown fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    licensekey: str = Field(
        "", description="Missing or empty: answered Invalid, as the addon does."
    )
    domain: str = ""
    ip: str = ""
    dir: str = ""
    check_token: str = ""


_SIGNATURE = {
    "License-Signature": {
        "description": 'keyid="...", algorithm="ed25519", signature="<base64>" over the body',
        "schema": {"type": "string"},
    }
}


def _verify_paths(ref) -> dict[str, Any]:
    problems = {
        str(status): {"description": PROBLEM_TITLES.get(status, "Refused"),
                      "headers": _SIGNATURE,
                      "content": {"application/problem+json": {"schema": ref(VerifyProblem)}}}
        for status in (400, 413, 415, 429)
    }  # fmt: skip
    form = {"schema": ref(VerifyRequest)}
    return {
        "/api/v1/verify": {
            "post": {
                "operationId": "verify",
                "summary": "A module's phone-home check (the native protocol v1)",
                "tags": ["verification"],
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/json": form, "application/x-www-form-urlencoded": form}},
                "responses": {
                    "200": {"description": "A decision, valid or not", "headers": _SIGNATURE,
                            "content": {"application/json": {"schema": ref(VerifyAnswer)}}},
                    **problems,
                },
            }
        },
        "/modules/servers/licensing/verify.php": {
            "post": {
                "operationId": "verifyWhmcs",
                "summary": "The WHMCS Licensing Addon compatible check",
                "tags": ["verification"],
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": ref(WhmcsVerifyForm)},
                    "multipart/form-data": {"schema": ref(WhmcsVerifyForm)}}},
                "responses": {
                    "200": {"description": "One <tag>value</tag> per line, as the WHMCS "
                                           "addon answers",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **{str(status): {
                        "description": PROBLEM_TITLES[status],
                        "content": {"application/problem+json": {"schema": ref(VerifyProblem)}},
                    } for status in (400, 413, 415)},
                    "429": {"description": "Rate limited: an EMPTY body (the WHMCS sample "
                                           "then falls back to its local key)",
                            "content": {"text/plain": {"schema": {"type": "string",
                                                                  "maxLength": 0}}}},
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "jwks",
                "summary": "The public signing keys (RFC 7517, RFC 8037)",
                "tags": ["verification"],
                "security": [],
                "responses": {"200": {"description": "A JWK set", "content": {
                    "application/jwk-set+json": {"schema": {"type": "object"}}}}},
            }
        },
    }  # fmt: skip


# -- the document ---------------------------------------------------------------------------


@functools.cache
def document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization"), (VerifyProblem, "serialization"),
        (VerifyRequest, "validation"),
        (VerifyAnswer, "serialization"), (WhmcsVerifyForm, "validation"),
    ]  # fmt: skip
    for op in OPERATIONS:
        models += [(m, "serialization") for m in op.answers.values() if m is not None]
        models += [(m, "validation") for m in (op.body, op.query) if m is not None]
    models = list(dict.fromkeys(models))
    refs, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, Any]:
        key = (model, mode) if (model, mode) in refs else (model, "validation")
        return refs[key]

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault("/api" + op.path, {})[op.method.lower()] = _operation(op, ref, schemas)
    paths.update(_verify_paths(ref))
    paths["/api/v1/tokens/jwks.json"] = {
        "get": {
            "operationId": "tokenJwks",
            "summary": "The public keys that verify access tokens (RFC 7517, RFC 8037)",
            "tags": ["tokens"],
            "security": [],
            "responses": {"200": {"description": "A JWK set", "content": {
                "application/jwk-set+json": {"schema": {"type": "object"}}}}},
        }
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "License server vendor API",
            "version": "1",
            "description": (
                "The vendor's systems (billing, store) manage products and licenses. "
                "Authenticate with an API key made in the admin (API keys) or by "
                "`run.py create-api-key`: `Authorization: Bearer lsk_live_...`, or exchange it "
                "at `POST /api/v1/tokens` for a 15-minute access token (an EdDSA JWT with the "
                "key's scopes) and a rotating refresh token, and send the access token the "
                "same way. Each operation needs the scope it names. Errors are RFC 9457 "
                "problem documents. Send an Idempotency-Key with every POST so that a retry "
                "never does the work twice."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": name}
            for name in (
                "products",
                "licenses",
                "attempts",
                "bans",
                "tokens",
                "verification",
                "alerts",
            )
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "lsk_live_... (API key) or a JWT (access token)",
                }
            },
        },
        "security": [{"apiKey": []}],
    }


def _operation(op, ref, schemas) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in op.path_params.items()
    ]
    if op.query is not None:
        query_schema = schemas[ref(op.query, "validation")["$ref"].rsplit("/", 1)[1]]
        required = set(query_schema.get("required", ()))
        for name, schema in query_schema["properties"].items():
            parameter = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in schema.items() if k != "description"},
            }
            if "description" in schema:
                parameter["description"] = schema["description"]
            parameters.append(parameter)  # fmt: skip
    if op.method == "POST" and op.idempotent:
        parameters.append({
            "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
            "description": "A unique key per request (a UUID): a retry with the same key gets "
                           "the first answer. Kept 24 hours.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        })  # fmt: skip
    responses: dict[str, Any] = {}
    for status, model in op.answers.items():
        answer: dict[str, Any] = {"description": "Done" if status < 300 else "Answer"}
        if model is not None:
            answer["content"] = {"application/json": {"schema": ref(model, "serialization")}}
        responses[str(status)] = answer
    statuses = sorted(set(COMMON_PROBLEMS) | set(op.problems)
                      | ({413, 415} if op.body else set())
                      | ({409, 422} if op.method == "POST" and op.idempotent
                         else set()))  # fmt: skip
    for status in statuses:
        responses[str(status)] = {
            "description": PROBLEM_TITLES[status],
            "content": {"application/problem+json": {"schema": ref(Problem)}},
        }
    operation: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "description": (op.description + "\n\n" if op.description else "")
        + ("No scope needed." if op.public else f"Scope: `{op.scope}`."),
        "tags": [op.tag] if op.tag else [],
        "parameters": parameters,
        "responses": responses,
    }
    if op.public:
        operation["security"] = [{"apiKey": []}, {}]  # the bearer is optional here
    else:
        operation["x-scope"] = op.scope
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": ref(op.body, "validation")}},
        }
    return operation


@functools.cache
def document_bytes() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=document_bytes(), content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )  # fmt: skip


# -- the page -------------------------------------------------------------------------------


@functools.cache
def _pages() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    return env


def _operations_for_page(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            found.append({
                "id": op["operationId"], "method": method.upper(), "path": path,
                "summary": op["summary"], "scope": op.get("x-scope", ""),
                "parameters": op.get("parameters", []),
                "body": next(iter(body.values()))["schema"] if body else None,
                "body_types": list(body), "responses": op["responses"],
            })  # fmt: skip
    return found


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    return schema.get("$ref", "").rsplit("/", 1)[-1]


async def docs_page(request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    doc = document()
    body = _pages().get_template("api/docs.html").render(
        nonce=nonce, doc=doc, operations=_operations_for_page(doc), schema_name=_schema_name,
        statuses=[s.value for s in Status],
    )  # fmt: skip
    return web.Response(
        text=body, content_type="text/html", charset="utf-8",
        headers={
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'none'; "
                "frame-ancestors 'none'; base-uri 'none'"
            ),
            "Referrer-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        },
    )  # fmt: skip

"""One registration list for the vendor API: the router and the OpenAPI document are both built
from `Operation`s, so no route can exist without being documented (tests prove it).

`dispatch(operation)` wraps a handler with what every operation shares, in this order:
1. authentication: `Authorization: Bearer <API key or access token>` (RFC 6750), told apart
   by shape (an access token is a JWT, staff/api_tokens.py); missing, unknown, expired or
   revoked is 401 with `WWW-Authenticate` (ASVS 4.0.3 V2.10, V3.5, V4.1.1). Before a
   credential is looked up, an address out of guesses is refused; a bad one spends that
   address's guessing budget (the verify endpoint's `unknown-key-per-ip`). A `public`
   operation (the token endpoint) authenticates from its body instead;
2. the per-key rate limit (`limits`, `rate_limit.per_api_key`; an access token counts against
   the key behind it): 429 with Retry-After and the
   IETF RateLimit fields (V11.1.4);
3. the key's scope: 403 with `insufficient_scope` when it lacks the operation's permission
   (V4.1.3, least privilege);
4. the query and path (pydantic), then the body: `application/json` only (415), at most
   `MAX_BODY_BYTES` (413), UTF-8, one JSON object without duplicate names or deep nesting,
   then the model, strictly typed with no extra fields (V5.1.1, V5.1.3, V5.1.4, V13.1.3);
5. `Idempotency-Key` on POST (web/api/idempotency.py), except where the answer holds a secret
   that must not be stored (`idempotent=False`: the token endpoint);
6. the handler, which calls the license service with the key as the actor, so the audit log
   names the key (licensing/actors.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from license_server import appkeys
from license_server.staff.api_keys import ApiKey, ApiKeys
from license_server.staff.api_tokens import ApiTokens, looks_like_access_token
from license_server.web import request_body
from license_server.web.api.idempotency import (
    HEADER,
    Claim,
    IdempotencyStore,
    fingerprint,
    idempotency_key,
)  # fmt: skip
from license_server.web.api.problems import (
    ApiProblem,
    bad_body,
    field_error,
    from_validation,
    invalid,
)
from license_server.web.rate_limit import PER_API_KEY, limited_headers

API_KEYS = web.AppKey("api_keys", ApiKeys)
API_TOKENS = web.AppKey("api_tokens", ApiTokens)
IDEMPOTENCY = web.AppKey("api_idempotency", IdempotencyStore)
# Tests only: awaited after an idempotency key is claimed, before the handler runs.
AFTER_CLAIM_HOOK = web.AppKey("api_after_claim_hook", object)

MAX_BODY_BYTES = 32 * 1024
REALM = 'Bearer realm="license-server"'
JSON_TYPES = ("application/json", "application/merge-patch+json")


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the request, the key acting, and the validated inputs."""

    request: web.Request
    key: ApiKey  # for a `public` operation: None (the handler authenticates)
    body: Any = None  # the body model, when the operation has one
    query: Any = None  # the query model, when the operation has one

    @property
    def service(self):
        return self.request.config_dict[appkeys.RUNTIME].licenses


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # under /api, OpenAPI style: /v1/licenses/{id}
    name: str  # operationId and route name
    summary: str
    handler: Callable[[Call], Awaitable[web.Response]]
    scope: str  # the rbac permission the API key needs
    answers: dict[int, type[BaseModel] | None]  # success status -> model (None: no body)
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: dict[str, dict] = field(default_factory=dict)  # name -> JSON schema
    problems: tuple[int, ...] = ()  # statuses beyond the common ones (400 401 403 429)
    tag: str = ""
    description: str = ""
    public: bool = False  # no Authorization needed: the handler authenticates the caller
    idempotent: bool = True  # honours Idempotency-Key (POST)


def json_answer(model: BaseModel, status: int = 200, headers=None) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type="application/json",
        headers=headers,
    )  # fmt: skip


def dispatch(operation: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        key = None if operation.public else await authenticate(request, operation.scope)
        query = _query(request, operation.query)
        body, raw = await _body(request, operation)
        call = Call(request, key, body, query)  # type: ignore[arg-type]
        idem = (
            idempotency_key(request)
            if operation.method == "POST" and operation.idempotent and key is not None
            else None
        )
        if idem is None:
            return await operation.handler(call)
        store = request.config_dict[IDEMPOTENCY]
        claimed = await store.begin(key.id, idem, fingerprint(request, raw))
        if not isinstance(claimed, Claim):
            return claimed  # the stored answer
        return await store.run(claimed, lambda: _after_claim(request, operation, call))

    handler.__name__ = operation.name
    return handler


async def _after_claim(request: web.Request, operation: Operation, call: Call) -> web.Response:
    hook = request.config_dict.get(AFTER_CLAIM_HOOK)
    if hook is not None:
        await hook(request)  # type: ignore[operator]
    return await operation.handler(call)


async def guard_guessing(request: web.Request) -> str:
    """The caller's address, refused (429) when it has no guesses left."""
    source_ip = request.config_dict[appkeys.CLIENT_IP](request)
    limited = await request.config_dict[appkeys.RATE_LIMITER].guessing_exhausted(source_ip)
    if limited:
        raise _too_many(limited)
    return source_ip


async def unauthorized(request: web.Request, source_ip: str, detail: str) -> ApiProblem:
    """A refused credential: it spends the address's guessing budget; 401 naming why."""
    await request.config_dict[appkeys.RATE_LIMITER].after_decision("unknown_key", source_ip)
    return ApiProblem(
        401, "Unauthorized", detail, slug="unauthorized",
        headers={"WWW-Authenticate": f'{REALM}, error="invalid_token", '
                                     f'error_description="{detail}"'},
    )  # fmt: skip


async def count_use(request: web.Request, key_id: int) -> None:
    """The per-credential rate limit: the API key's, whichever credential presented it."""
    limited = await request.config_dict[appkeys.RATE_LIMITER].hit(PER_API_KEY, str(key_id))
    if limited:
        raise _too_many(limited)


async def authenticate(request: web.Request, scope: str | None, *, api_key_only=False) -> ApiKey:
    """The API key acting, presented itself or behind an access token (`api_key_only`: the
    key itself), after the rate limit; None for `scope` checks no scope."""
    source_ip = await guard_guessing(request)
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiProblem(
            401, "Unauthorized",
            "Send an API key or access token: Authorization: Bearer <credential>.",
            slug="unauthorized", headers={"WWW-Authenticate": REALM},
        )  # fmt: skip
    if looks_like_access_token(token):
        if api_key_only:
            raise await unauthorized(request, source_ip, "Present the API key itself here.")
        outcome = await request.config_dict[API_TOKENS].authenticate(token)
        noun = "access token"
    else:
        outcome = await request.config_dict[API_KEYS].authenticate(token)
        noun = "API key"
    if outcome.key is None:
        why = {"expired": f"The {noun} has expired.", "revoked": f"The {noun} was revoked."}
        detail = why.get(outcome.problem, f"The {noun} is not valid.")
        raise await unauthorized(request, source_ip, detail)
    key = outcome.key
    await count_use(request, key.id)
    if scope is not None and not key.may(scope):
        raise ApiProblem(
            403, "Forbidden", f"This API key lacks the scope {scope}.", slug="insufficient-scope",
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
        )  # fmt: skip
    return key


def _too_many(limited) -> ApiProblem:
    return ApiProblem(
        429, "Too Many Requests",
        f"Rate limit '{limited.policy}' reached; retry in {limited.retry_after} s.",
        slug="rate-limited", headers=limited_headers(limited),
    )  # fmt: skip


def _query(request: web.Request, model: type[BaseModel] | None) -> Any:
    query = request.query
    if model is None:
        return None
    fields: dict[str, str] = {}
    for name in query:
        values = query.getall(name)
        if len(values) > 1:
            raise from_validation_text("query", name, "given more than once")
        fields[name] = values[0]
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc, "query") from None


def from_validation_text(location: str, field: str, message: str) -> ApiProblem:
    return invalid(location, [field_error(location, field, message)])


async def _body(request: web.Request, operation: Operation) -> tuple[Any, bytes]:
    """The validated body model and the raw bytes (for the idempotency fingerprint)."""
    if request.method not in ("POST", "PATCH", "PUT"):
        return None, b""
    raw = await _read(request)
    model = operation.body
    if model is None:
        if raw.strip():
            raise bad_body("this operation takes no body")
        return None, raw
    if not raw.strip():
        if operation.body_required:
            raise bad_body("send a JSON object")
        return model(), raw
    if request.content_type not in JSON_TYPES:
        raise ApiProblem(
            415, "Unsupported Media Type", "Send the body as application/json.",
            slug="unsupported-media-type",
        )  # fmt: skip
    try:
        request_body.parse_json_object(raw)  # duplicates, nesting, encoding, not an object
    except request_body.Malformed as problem:
        raise bad_body(problem.detail) from None
    try:
        return model.model_validate_json(raw, strict=True), raw
    except ValidationError as exc:
        raise from_validation(exc, "body") from None


async def _read(request: web.Request) -> bytes:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _too_large()
    try:
        return await request_body.read_body(
            request, request.config_dict[appkeys.SETTINGS].verify.body_read_timeout_seconds
        )
    except request_body.Malformed as problem:
        if problem.status == 413:
            raise _too_large() from None
        raise ApiProblem(problem.status, problem.title, problem.detail) from None


def _too_large() -> ApiProblem:
    return ApiProblem(
        413, "Payload Too Large", f"The body may be at most {MAX_BODY_BYTES} bytes.",
        slug="too-large",
    )  # fmt: skip


__all__ = ["HEADER", "Call", "Operation", "dispatch", "json_answer"]

"""The vendor API (issue #13), mounted at /api as a sub-application: `/api/v1/...` for the
vendor's systems, `/api/openapi.json` and `/api/docs` describing it.

JSON only; every error is an RFC 9457 problem document (`problems.py`); the operations and the
document come from one list (`routes.OPERATIONS`). The verification endpoint at
`/api/v1/verify` is routed by the root application (web/routes.py) and found there first.
`api_ctx` runs on the root application, after the runtime: the API key service and the
idempotency store, the access-token service with its own signing key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from license_server import appkeys
from license_server.crypto.keystore import load_token_keyring
from license_server.staff.api_keys import ApiKeys
from license_server.staff.api_tokens import ApiTokens
from license_server.web import verify
from license_server.web.api import openapi, routes, tokens
from license_server.web.api.idempotency import IdempotencyStore
from license_server.web.api.problems import api_middleware
from license_server.web.api.registry import (
    AFTER_CLAIM_HOOK,
    API_KEYS,
    API_TOKENS,
    IDEMPOTENCY,
    MAX_BODY_BYTES,
)  # fmt: skip

__all__ = ["AFTER_CLAIM_HOOK", "API_KEYS", "API_TOKENS", "api_app", "api_ctx"]


async def api_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[appkeys.RUNTIME].licenses
    app[API_KEYS] = ApiKeys(service)
    app[IDEMPOTENCY] = IdempotencyStore(service.db, service.now)
    token_keys = await asyncio.to_thread(load_token_keyring, app[appkeys.SETTINGS].keys_dir)
    app[API_TOKENS] = ApiTokens(service, token_keys, app[appkeys.SETTINGS].issuer)
    yield


def api_app() -> web.Application:
    api = web.Application(middlewares=[api_middleware], client_max_size=MAX_BODY_BYTES)
    routes.add_routes(api.router)
    api.router.add_get("/v1/tokens/jwks.json", tokens.jwks, name="token_jwks")
    api.router.add_get("/openapi.json", openapi.openapi_json, name="openapi")
    api.router.add_get("/docs", openapi.docs_page, name="api_docs")
    # Never reached by a POST: the root application's /api/v1/verify is more specific and
    # matched first. Registered so that another method there is a 405 (Allow: POST), as it
    # was before this sub-application claimed /api, not the sub-application's 404.
    api.router.add_post("/v1/verify", verify.verify, name="verify_method_guard")
    return api

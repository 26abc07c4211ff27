"""`POST /api/v1/tokens`: an API key or a refresh token for an access token and the next
refresh token (staff/api_tokens.py has the design); `GET /api/v1/tokens/jwks.json`: the public
keys that verify access tokens (RFC 7517, RFC 8037).

- `grant_type` `api_key`: the API key is the bearer credential (`Authorization: Bearer
  lsk_live_...`), authenticated as for every operation (guessing budget, per-key rate limit);
  an access token is refused there, or a stolen one could be renewed for ever.
- `grant_type` `refresh_token`: the refresh token in the body is the credential; an unknown one
  spends the address's guessing budget as a bad API key does, and the per-key rate limit of
  the key behind it applies.

The answer holds secrets: `Cache-Control: no-store` (RFC 6749 §5.1, the middleware's default)
and no Idempotency-Key record (that would store the tokens in the database); a client that
retries simply exchanges again. Failures are 401 problem documents (ASVS 4.0.3 V3.5, V7.4.1).
"""

from __future__ import annotations

from aiohttp import web

from license_server.staff.api_tokens import TokenPair, TokenRefused
from license_server.web.api.models import TokenAnswer, TokenRequest
from license_server.web.api.registry import (
    API_TOKENS,
    Call,
    authenticate,
    count_use,
    guard_guessing,
    json_answer,
    unauthorized,
)  # fmt: skip


async def issue_tokens(call: Call) -> web.Response:
    body: TokenRequest = call.body
    request = call.request
    tokens = request.config_dict[API_TOKENS]
    if body.grant_type == "api_key":
        key = await authenticate(request, None, api_key_only=True)
        pair = await tokens.exchange_key(key)
    else:
        source_ip = await guard_guessing(request)
        presented = body.refresh_token or ""
        # Counted before the token is spent: a 429 must not cost the client its token.
        key_id = await tokens.key_id_of(presented)
        if key_id is not None:
            await count_use(request, key_id)
        try:
            _key, pair = await tokens.refresh(presented)
        except TokenRefused as refused:
            raise await unauthorized(request, source_ip, refused.detail) from None
    return json_answer(_answer(pair), headers={"Pragma": "no-cache"})


def _answer(pair: TokenPair) -> TokenAnswer:
    return TokenAnswer(
        access_token=pair.access_token, expires_in=pair.expires_in,
        refresh_token=pair.refresh_token, refresh_token_expires_in=pair.refresh_expires_in,
        scope=pair.scope,
    )  # fmt: skip


async def jwks(request: web.Request) -> web.Response:
    return web.Response(
        body=request.config_dict[API_TOKENS].keyring.jwks_body,
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )  # fmt: skip

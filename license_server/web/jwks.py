"""`GET /.well-known/jwks.json`: the public signing keys (RFC 7517 set, RFC 8037 members).

Every published key is listed: a new key before it signs (so module releases can ship it), the
active key, and earlier keys until `run.py retire` drops them once nothing they signed is valid
(`crypto/keystore.py`). The body is the keyring's, which a running server updates in place when
the CLI changes the keys, so this view always serves the current set. Cacheable for a short
while: clients that fetch it (our admin docs, not the shipped module, which embeds its keys)
need not hit it each time.
"""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys


async def jwks(request: web.Request) -> web.Response:
    body = request.app[appkeys.RUNTIME].keyring.jwks_body
    return web.Response(
        body=body,
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )

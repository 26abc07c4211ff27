"""`GET /.well-known/jwks.json`: the public signing keys (RFC 7517 set, RFC 8037 members).

Every key that ever signed stays published (see `crypto/signing.py`), so old local keys and
license keys keep verifying after a rotation. Cacheable for a short while: clients that fetch
it (our admin docs, not the shipped module, which embeds its keys) need not hit it each time.
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

"""`create_app(settings)`: builds the aiohttp application. No global state.

Order matters: the error middleware is outermost so it also catches failures of the others and
still gets security headers from the middleware inside it; resources open in `cleanup_ctx`
(keys and database first) so that nothing serves before they are ready and everything closes
on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from license_server import appkeys
from license_server.runtime import open_runtime
from license_server.settings import Settings
from license_server.web.middlewares import error_middleware, security_headers_middleware
from license_server.web.routes import setup_routes

# Verification requests are small; a large body is refused early (413) instead of parsed.
MAX_REQUEST_BYTES = 64 * 1024


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_runtime(app[appkeys.SETTINGS]) as runtime:
        app[appkeys.RUNTIME] = runtime
        yield


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, security_headers_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[appkeys.SETTINGS] = settings
    app.cleanup_ctx.append(_runtime_ctx)
    setup_routes(app)
    return app

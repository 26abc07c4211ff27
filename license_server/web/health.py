"""Liveness and readiness probes for orchestrators and the Dockerfile HEALTHCHECK."""

from __future__ import annotations

import logging

from aiohttp import web

from license_server import appkeys

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to verify: the database answers and signing keys are loaded."""
    runtime = request.app.get(appkeys.RUNTIME)
    checks = {"database": False, "keys": False}
    if runtime is not None:
        checks["keys"] = bool(runtime.keyring.keys)
        try:
            checks["database"] = await runtime.db.ping()
        except Exception:
            log.exception("readiness: database ping failed")
    ready = all(checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )

"""All routes, named, in one place."""

from __future__ import annotations

from aiohttp import web

from license_server.web import health, jwks, verify, whmcs
from license_server.web.metrics_endpoint import metrics_page


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz, name="healthz")
    app.router.add_get("/readyz", health.readyz, name="readyz")
    app.router.add_get("/.well-known/jwks.json", jwks.jwks, name="jwks")
    app.router.add_post("/api/v1/verify", verify.verify, name="verify")
    app.router.add_post(
        "/modules/servers/licensing/verify.php", whmcs.verify_php, name="whmcs_verify"
    )
    app.router.add_get("/metrics", metrics_page, name="metrics")  # Prometheus (metrics.py)

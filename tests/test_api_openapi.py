"""The OpenAPI 3.1 document is generated from the routes and models, covers every /api/v1
route the application serves (the verification endpoint included), and its page renders
without fetching anything from elsewhere."""

from __future__ import annotations

import re

from aiohttp import web

from license_server.app import create_app
from license_server.web.api.openapi import document


def _served_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the app and its sub-applications, as OpenAPI paths."""
    found = set()

    def walk(application) -> None:  # a mounted sub-application's paths carry its prefix
        for resource in application.router.resources():
            if isinstance(resource, web.PrefixedSubAppResource):
                walk(resource._app)
                continue
            for route in resource:
                if route.method not in ("HEAD", "*"):
                    found.add((route.method, resource.canonical))

    walk(app)
    return found


def test_every_api_route_is_in_the_document(settings):
    served = {(m, p) for m, p in _served_routes(create_app(settings)) if p.startswith("/api/v1/")}
    documented = {
        (method.upper(), path)
        for path, methods in document()["paths"].items()
        for method in methods
    }
    assert served and served <= documented, served - documented
    assert ("POST", "/api/v1/verify") in documented
    assert ("POST", "/api/v1/licenses/{id}/renew") in served


async def test_the_document_is_openapi_3_1_built_from_the_models(client):
    response = await client.get("/api/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert {"LicenseSpec", "ProductSpec", "LicenseOut", "LicenseCreated", "Problem",
            "VerifyRequest"} <= set(schemas)  # fmt: skip
    create = doc["paths"]["/api/v1/licenses"]["post"]
    assert create["x-scope"] == "license:create"
    assert {"400", "401", "403", "409", "422", "429"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    listing = doc["paths"]["/api/v1/licenses"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"key", "status", "product", "cursor",
                                                          "limit"}  # fmt: skip
    # Every $ref points at a schema that is there.
    text = await response.text()
    for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
        assert name in schemas
    assert "license_key" in schemas["LicenseCreated"]["properties"]
    assert "license_key" not in schemas["LicenseOut"]["properties"]


async def test_the_docs_page_renders_the_document_with_nothing_from_elsewhere(client):
    response = await client.get("/api/docs")
    page = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'nonce-")
    assert (
        "<script" not in page
        and "http://" not in page
        and "https://" not in page.replace("https://license-server.invalid", "")
    )
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in page
    for op in ("createLicense", "listLicenses", "renewLicense", "verify"):
        assert f'id="{op}"' in page
    assert 'id="schema-LicenseSpec"' in page

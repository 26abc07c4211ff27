"""The application shell: health probes, the JWKS, problem documents, security headers."""

from __future__ import annotations

import base64

from license_server.crypto.signing import jwk_thumbprint
from license_server.web.middlewares import SECURITY_HEADERS


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_keys(client, app_runtime):
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"database": True, "keys": True}
    await app_runtime.db.close()
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["database"] is False


async def test_jwks_publishes_rfc_8037_keys(client, app_runtime):
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.content_type == "application/jwk-set+json"
    (key,) = (await response.json())["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["use"] == "sig"
    assert key["alg"] == "EdDSA"
    raw = base64.urlsafe_b64decode(key["x"] + "==")
    assert len(raw) == 32 and key["kid"] == jwk_thumbprint(raw)
    assert key["kid"] == app_runtime.keyring.active.kid
    assert "d" not in key  # never the private part


async def test_unknown_paths_get_a_problem_document(client):
    response = await client.get("/nope")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404 and body["title"] == "Not Found"


async def test_wrong_method_keeps_allow_header(client):
    response = await client.post("/healthz")
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]


async def test_security_headers_on_every_response(client):
    for path in ("/healthz", "/nope", "/.well-known/jwks.json"):
        response = await client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (path, name)


def test_access_log_masks_client_addresses():
    from license_server.web.access_log import mask_ip

    assert mask_ip("203.0.113.77") == "203.0.113.0/24"
    assert mask_ip("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert mask_ip("::ffff:198.51.100.9") == "198.51.100.0/24"
    assert mask_ip(None) == "-" and mask_ip("garbage") == "-"


def test_the_served_access_log_carries_no_full_address(tmp_path, database_url):
    from tests.server_process import ServerProcess

    server = ServerProcess(database_url, tmp_path / "keys", tmp_path)
    with server:
        server.get("/healthz")
    log = server.log()
    assert '127.0.0.0/24 "GET /healthz" 200' in log
    # run_app took the handler's options (logger, parser limits) without falling back.
    assert "Failed to create request handler" not in log
    assert "127.0.0.1 " not in log.replace("http://127.0.0.1:", "")

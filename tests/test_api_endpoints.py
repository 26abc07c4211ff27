"""The vendor API's endpoints (issue #13): for each, success, 400 with field details, 401, 403,
404 and 409 where they apply; changes take effect at the next verification; the audit log
names the key; the list pages by cursor while licenses are being added."""

from __future__ import annotations

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from tests.api_helpers import LICENSE_BODY, PRODUCT_BODY, api, make_key
from tests.verify_helpers import nonce

PROBLEM = "application/problem+json"


async def _verify(client, key: str) -> dict:
    response = await client.post(
        "/api/v1/verify",
        json={"license_key": key, "domain": "shop.example.com", "nonce": nonce()},
    )
    return await response.json()


@pytest.fixture
async def admin_key(client):
    _, headers = await make_key(client)
    return headers


async def _product_and_license(client, headers) -> tuple[int, str]:
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    response, body = await api(client, "POST", "/api/v1/licenses", headers, LICENSE_BODY)
    assert response.status == 201, body
    return body["id"], body["license_key"]


# -- every operation: (method, path, scope, body) ------------------------------------------

OPERATIONS = [
    ("GET", "/api/v1/products", "product:read", None),
    ("POST", "/api/v1/products", "product:create", {"code": "other", "name": "Other"}),
    ("GET", "/api/v1/products/mymod", "product:read", None),
    ("PATCH", "/api/v1/products/mymod", "product:update", {"seats": 3}),
    ("POST", "/api/v1/licenses", "license:create", LICENSE_BODY),
    ("GET", "/api/v1/licenses", "license:read", None),
    ("GET", "/api/v1/licenses/{id}", "license:read", None),
    ("POST", "/api/v1/licenses/{id}/suspend", "license:suspend", None),
    ("POST", "/api/v1/licenses/{id}/revoke", "license:revoke", None),
    ("POST", "/api/v1/licenses/{id}/reissue", "license:reissue", None),
    ("POST", "/api/v1/licenses/{id}/renew", "license:update", {"expires": None}),
    ("POST", "/api/v1/licenses/{id}/unsuspend", "license:suspend", None),
]


@pytest.mark.parametrize(("method", "path", "scope", "body"), OPERATIONS)
async def test_every_operation_needs_a_key_and_its_scope(client, admin_key, method, path, scope,
                                                         body):  # fmt: skip
    license_id, _ = await _product_and_license(client, admin_key)
    path = path.format(id=license_id)
    response, problem = await api(client, method, path, {}, body)
    assert response.status == 401 and response.content_type == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert problem["status"] == 401 and problem["title"] == "Unauthorized"

    resource = scope.split(":")[0]
    other = "product:read" if resource == "license" else "license:read"
    _, narrow = await make_key(client, [other], name="narrow")
    response, problem = await api(client, method, path, narrow, body)
    assert response.status == 403 and problem["detail"].endswith(f"{scope}.")
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]

    _, exact = await make_key(client, [scope], name="exact")
    response, answer = await api(client, method, path, exact, body)
    assert response.status in (200, 201, 409), answer  # 409: unsuspend of a license not suspended


async def test_products_create_read_update_and_refusals(client, admin_key):
    response, body = await api(client, "POST", "/api/v1/products", admin_key, PRODUCT_BODY)
    assert response.status == 201 and body["code"] == "mymod" and body["seats"] == 2
    assert response.headers["Location"] == "/api/v1/products/mymod"
    response, body = await api(client, "POST", "/api/v1/products", admin_key, PRODUCT_BODY)
    assert response.status == 409 and body["title"] == "Conflict"
    response, body = await api(client, "GET", "/api/v1/products", admin_key)
    assert [p["code"] for p in body["items"]] == ["mymod"]
    response, body = await api(client, "GET", "/api/v1/products/MyMod", admin_key)
    assert response.status == 200 and body["name"] == "My Module"
    response, body = await api(client, "PATCH", "/api/v1/products/mymod", admin_key,
                               {"seats": 5, "free_trial": True})  # fmt: skip
    assert response.status == 200 and body["seats"] == 5 and body["free_trial"] is True
    response, body = await api(client, "GET", "/api/v1/products/nope", admin_key)
    assert response.status == 404 and response.content_type == PROBLEM
    response, body = await api(client, "PATCH", "/api/v1/products/nope", admin_key, {"seats": 1})
    assert response.status == 404
    response, body = await api(client, "PATCH", "/api/v1/products/mymod", admin_key, {})
    assert response.status == 400 and "nothing to change" in body["detail"]
    response, body = await api(client, "POST", "/api/v1/products", admin_key,
                               {"code": "<x>", "name": "", "seats": 0})  # fmt: skip
    assert response.status == 400
    assert {(e["location"], e["field"]) for e in body["errors"]} == {
        ("body", "code"), ("body", "name"), ("body", "seats")}  # fmt: skip


async def test_a_license_through_its_life_each_change_seen_at_the_next_check(client, admin_key):
    license_id, key = await _product_and_license(client, admin_key)
    response, body = await api(client, "GET", f"/api/v1/licenses/{license_id}", admin_key)
    assert response.status == 200 and body["status"] == "pending" and "license_key" not in body
    assert key not in await response.text()
    assert (await _verify(client, key))["status"] == "active"  # binds shop.example.com

    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/suspend", admin_key)
    assert response.status == 200 and body["status"] == "suspended"
    assert (await _verify(client, key))["status"] == "suspended"
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/suspend", admin_key)
    assert response.status == 409 and "cannot suspend" in body["detail"]
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/unsuspend",
                               admin_key)  # fmt: skip
    assert response.status == 200 and body["status"] == "active"
    assert (await _verify(client, key))["status"] == "active"

    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/renew", admin_key,
                               {"expires": "2099-12-31"})  # fmt: skip
    assert response.status == 200 and body["expires_at"] == "2100-01-01T00:00:00Z"
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/renew", admin_key,
                               {"expires": "2001-01-01"})  # fmt: skip
    assert response.status == 409 and "future" in body["detail"]
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/renew", admin_key,
                               {})  # fmt: skip
    assert response.status == 400 and body["errors"][0]["field"] == "expires"
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/renew", admin_key,
                               {"expires": "9999-12-31"})  # fmt: skip
    assert response.status == 400 and body["errors"][0]["field"] == "expires"

    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/reissue",
                               admin_key)  # fmt: skip
    assert response.status == 200 and body["bindings"] == [] and body["reissue_count"] == 1
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/revoke", admin_key)
    assert response.status == 200 and body["status"] == "revoked"
    assert (await _verify(client, key))["status"] == "revoked"
    response, body = await api(client, "POST", f"/api/v1/licenses/{license_id}/revoke", admin_key)
    assert response.status == 409

    async with client.app[RUNTIME].db.read() as conn:
        rows = await staff_rows.audit_page(conn, None, 20)
    api_rows = [row for row in rows if row["actor_kind"] == "api"]
    assert api_rows and all(row["actor_id"].startswith("lsk_live_") for row in api_rows)
    assert "license.revoke" in {row["action"] for row in api_rows}


async def test_unknown_licenses_and_bad_ids_are_404(client, admin_key):
    await _product_and_license(client, admin_key)
    for path in ("/api/v1/licenses/12345", "/api/v1/licenses/99999999999999999999",
                 "/api/v1/licenses/abc"):  # fmt: skip
        response, _ = await api(client, "GET", path, admin_key)
        assert response.status == 404 and response.content_type == PROBLEM, path
    response, _ = await api(client, "POST", "/api/v1/licenses/12345/suspend", admin_key)
    assert response.status == 404
    response, _body = await api(client, "POST", "/api/v1/licenses/12345/explode", admin_key)
    assert response.status == 404 and response.content_type == PROBLEM


async def test_creating_a_license_refuses_bad_fields_and_writes_nothing(client, admin_key):
    await api(client, "POST", "/api/v1/products", admin_key, PRODUCT_BODY)
    runtime = client.app[RUNTIME]
    before = await runtime.licenses.count_by_status()
    for body, field in (
        ({**LICENSE_BODY, "email": "nope"}, "email"),
        ({**LICENSE_BODY, "product": "nope"}, "product"),
        ({**LICENSE_BODY, "expires": "2001-01-01"}, "expires"),
        ({**LICENSE_BODY, "expires": "31/12/2027"}, "expires"),
        ({**LICENSE_BODY, "domains": ["exa mple.com"]}, "domains"),
        ({**LICENSE_BODY, "seats": "2"}, "seats"),
        ({**LICENSE_BODY, "seats": 10**30}, "seats"),
        ({**LICENSE_BODY, "admin": True}, "admin"),
        ({k: v for k, v in LICENSE_BODY.items() if k != "licensee"}, "licensee"),
    ):
        response, problem = await api(client, "POST", "/api/v1/licenses", admin_key, body)
        assert response.status == 400, (body, problem)
        assert response.content_type == PROBLEM
        assert any(e["field"].startswith(field) and e["location"] == "body"
                   for e in problem["errors"]), problem  # fmt: skip
    assert await runtime.licenses.count_by_status() == before


async def test_find_by_key_and_filters(client, admin_key):
    license_id, key = await _product_and_license(client, admin_key)
    response, body = await api(client, "GET", "/api/v1/licenses", admin_key, params={"key": key})
    assert [item["id"] for item in body["items"]] == [license_id]
    assert key not in await response.text()
    for missing in ("MYMOD-NOTAKEY", "x" * 40):
        response, body = await api(client, "GET", "/api/v1/licenses", admin_key,
                                   params={"key": missing})  # fmt: skip
        assert response.status == 200 and body["items"] == []
    await api(client, "POST", f"/api/v1/licenses/{license_id}/suspend", admin_key)
    _, _other = await _product_and_license(client, admin_key)
    response, body = await api(client, "GET", "/api/v1/licenses?status=suspended", admin_key)
    assert [item["id"] for item in body["items"]] == [license_id]
    response, body = await api(client, "GET", "/api/v1/licenses?product=nope", admin_key)
    assert body["items"] == []
    for query, field in (("status=lost", "status"), ("limit=0", "limit"), ("limit=x", "limit"),
                         ("cursor=!!", "cursor"), ("cursor=bGljMTp4", "cursor"),
                         ("order=id", "order"), ("limit=1&limit=2", "limit")):  # fmt: skip
        response, body = await api(client, "GET", f"/api/v1/licenses?{query}", admin_key)
        assert response.status == 400, query
        assert body["errors"][0]["location"] == "query" and body["errors"][0]["field"] == field


async def test_pages_cross_a_boundary_while_licenses_are_added(client, admin_key):
    """Keyset pages: every license that existed when the walk began is seen exactly once,
    although new licenses arrive between the pages."""
    await _product_and_license(client, admin_key)
    for _ in range(11):
        await api(client, "POST", "/api/v1/licenses", admin_key, LICENSE_BODY)
    response, body = await api(client, "GET", "/api/v1/licenses?limit=200", admin_key)
    existing = {item["id"] for item in body["items"]}
    assert len(existing) == 12
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        response, body = await api(client, "GET", "/api/v1/licenses", admin_key, params=params)
        assert response.status == 200
        seen += [item["id"] for item in body["items"]]
        pages += 1
        # A license added between two pages (its random id may fall before or after the cursor)
        await api(client, "POST", "/api/v1/licenses", admin_key, LICENSE_BODY)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages >= 3
    assert len(seen) == len(set(seen))  # none twice
    assert existing <= set(seen)  # none skipped
    assert seen == sorted(seen, reverse=True)  # one order throughout

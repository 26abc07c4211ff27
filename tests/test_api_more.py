"""The vendor API's remaining endpoints (issue #13): PATCH a license's terms, reset reissues,
list and release bindings, the attempt log, bans. For each: success, 400 with field details and
nothing written, 401, 403, 404, 409 where it applies, idempotent replay; each change seen at
the next verification and audited with the key as actor."""

from __future__ import annotations

import pytest

from license_server.appkeys import RUNTIME
from license_server.licensing.lifecycle import Action
from tests.api_helpers import LICENSE_BODY, PRODUCT_BODY, api, make_key
from tests.test_admin_attempts import T0, attempt, store
from tests.verify_helpers import nonce

PROBLEM = "application/problem+json"


@pytest.fixture
async def admin_key(client):
    _, headers = await make_key(client)
    return headers


async def _license(client, headers, **extra) -> tuple[int, str]:
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    response, body = await api(client, "POST", "/api/v1/licenses", headers,
                               {**LICENSE_BODY, **extra})  # fmt: skip
    assert response.status == 201, body
    return body["id"], body["license_key"]


async def _verify(client, key: str, domain: str = "shop.example.com") -> dict:
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": domain, "nonce": nonce()}
    )
    return await response.json()


async def _audit_actions(client) -> list[tuple[str, str]]:
    async with client.app[RUNTIME].db.read() as conn:
        rows = await conn.fetch_all("SELECT actor_kind, action FROM audit_log ORDER BY id")
    return [(r["actor_kind"], r["action"]) for r in rows]


# -- every new operation: 401 without a credential, 403 without its scope --------------------

OPERATIONS = [
    ("PATCH", "/api/v1/licenses/{id}", "license:update", {"notes": "x"}),
    ("POST", "/api/v1/licenses/{id}/reset-reissues", "license:reissue", None),
    ("GET", "/api/v1/licenses/{id}/bindings", "binding:read", None),
    ("POST", "/api/v1/licenses/{id}/bindings/release", "binding:release",
     {"kind": "domain", "value": "shop.example.com"}),
    ("GET", "/api/v1/attempts", "attempt:read", None),
    ("GET", "/api/v1/bans", "ban:read", None),
    ("POST", "/api/v1/bans", "ban:create", {"kind": "domain", "value": "pirate.example"}),
    ("DELETE", "/api/v1/bans/{ban}", "ban:delete", None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "scope", "body"), OPERATIONS)
async def test_every_new_operation_needs_a_credential_and_its_scope(
    client, admin_key, method, path, scope, body
):
    license_id, key = await _license(client, admin_key)
    await _verify(client, key)  # binds shop.example.com
    _, ban = await api(client, "POST", "/api/v1/bans", admin_key,
                       {"kind": "ip", "value": "203.0.113.9"})  # fmt: skip
    path = path.format(id=license_id, ban=ban["id"])
    response, problem = await api(client, method, path, {}, body)
    assert response.status == 401 and response.content_type == PROBLEM
    _, narrow = await make_key(client, ["product:read"], name="narrow")
    response, problem = await api(client, method, path, narrow, body)
    assert response.status == 403 and problem["detail"].endswith(f"{scope}.")
    _, exact = await make_key(client, [scope], name="exact")
    response, answer = await api(client, method, path, exact, body)
    assert response.status in (200, 201, 204), answer


# -- PATCH /licenses/{id} -------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent_and_the_next_check_sees_it(client, admin_key):
    license_id, key = await _license(client, admin_key, company="Smith Ltd", notes="n",
                                     domains=["shop.example.com"])  # fmt: skip
    assert (await _verify(client, key))["status"] == "active"
    response, body = await api(client, "PATCH", f"/api/v1/licenses/{license_id}", admin_key,
                               {"licensee": "Jones", "domains": ["other.example.com"]})  # fmt: skip
    assert response.status == 200, body
    assert body["licensee"] == "Jones" and body["company"] == "Smith Ltd" and body["notes"] == "n"
    assert body["rules"]["domains"] == ["other.example.com"] and body["seats"] == 2
    # The bound site is no longer allowed: refused at its next check.
    answer = await _verify(client, key)
    assert answer["status"] == "invalid" and answer["reason"] == "domain_not_allowed"
    response, body = await api(client, "PATCH", f"/api/v1/licenses/{license_id}", admin_key,
                               {"seats": 5, "domains": []})  # fmt: skip
    assert body["seats"] == 5 and body["rules"]["domains"] == []
    response, body = await api(client, "PATCH", f"/api/v1/licenses/{license_id}", admin_key,
                               {"seats": None})  # fmt: skip
    assert body["seats"] == 2  # null: the product's seats again
    assert ("api", "license.edit") in await _audit_actions(client)


async def test_patch_refuses_bad_fields_and_writes_nothing(client, admin_key):
    license_id, _ = await _license(client, admin_key)
    path = f"/api/v1/licenses/{license_id}"
    _, before = await api(client, "GET", path, admin_key)
    cases = [
        ({}, ""),
        ({"licensee": None}, "licensee"),
        ({"licensee": "   "}, "licensee"),
        ({"licensee": "a" * 201}, "licensee"),
        ({"seats": 0}, "seats"),
        ({"seats": 100_001}, "seats"),
        ({"seats": "3"}, "seats"),
        ({"seats": 2.5}, "seats"),
        ({"notes": "bell\x07"}, "notes"),
        ({"domains": ["not a domain!"]}, "domains"),
        ({"ips": ["300.1.1.1"]}, "ips"),
        ({"domains": "shop.example.com"}, "domains"),
        ({"domains": ["x.example"] * 1001}, "domains"),
        ({"colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response, problem = await api(client, "PATCH", path, admin_key, body)
        assert response.status == 400 and response.content_type == PROBLEM, (body, problem)
        assert problem["errors"][0]["field"].split(".")[0] == field, (body, problem)
    for raw in (b'{"notes": "a", "notes": "b"}', b"\xff\xfe", b"[]", b'{"notes": "x"'):
        response = await client.patch(
            path, data=raw, headers={**admin_key, "Content-Type": "application/json"}
        )
        assert response.status == 400, raw
    response = await client.patch(path, data=b'{"notes":"x"}',
                                  headers={**admin_key, "Content-Type": "text/plain"})  # fmt: skip
    assert response.status == 415
    json_headers = {**admin_key, "Content-Type": "application/json"}
    response = await client.patch(path, data=b'{"notes":"' + b"x" * 40_000 + b'"}',
                                  headers=json_headers)  # fmt: skip
    assert response.status == 413
    _, after = await api(client, "GET", path, admin_key)
    assert after == before
    response, _ = await api(client, "PATCH", "/api/v1/licenses/999", admin_key, {"notes": "x"})
    assert response.status == 404


# -- reset reissues -------------------------------------------------------------------------


async def test_reset_reissues_and_its_idempotent_replay(client, admin_key):
    license_id, _ = await _license(client, admin_key)
    for _ in range(2):
        await client.app[RUNTIME].licenses.apply(license_id, Action.REISSUE)
    path = f"/api/v1/licenses/{license_id}/reset-reissues"
    headers = {**admin_key, "Idempotency-Key": "reset-1"}
    response, body = await api(client, "POST", path, headers)
    assert response.status == 200 and body["reissue_count"] == 0
    await client.app[RUNTIME].licenses.apply(license_id, Action.REISSUE)
    response, replay = await api(client, "POST", path, headers)
    assert response.headers["Idempotent-Replayed"] == "true" and replay == body
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    assert license.reissue_count == 1  # the replay did not run again
    response, problem = await api(client, "POST", path, headers, {})
    assert response.status == 422  # the same key, another request (a body this time)
    response, problem = await api(client, "POST", path, admin_key, {"x": 1})
    assert response.status == 400 and problem["errors"][0]["field"] == "x"
    response, _ = await api(client, "POST", "/api/v1/licenses/999/reset-reissues", admin_key)
    assert response.status == 404


# -- bindings -------------------------------------------------------------------------------


async def test_list_and_release_bindings_frees_the_seat_at_the_next_check(client, admin_key):
    license_id, key = await _license(client, admin_key)
    await _verify(client, key, "one.example.com")
    await _verify(client, key, "two.example.com")
    answer = await _verify(client, key, "three.example.com")
    assert answer["reason"] == "seat_limit"
    path = f"/api/v1/licenses/{license_id}/bindings"
    response, body = await api(client, "GET", path, admin_key)
    assert response.status == 200
    assert {b["value"] for b in body["items"] if b["kind"] == "domain"} == {
        "one.example.com", "two.example.com"}  # fmt: skip
    release = {"kind": "domain", "value": "one.example.com"}
    headers = {**admin_key, "Idempotency-Key": "rel-1"}
    response, body = await api(client, "POST", f"{path}/release", headers, release)
    assert response.status == 200 and "one.example.com" not in [
        b["value"] for b in body["bindings"]
    ]
    response, replay = await api(client, "POST", f"{path}/release", headers, release)
    assert response.status == 200 and replay == body  # replayed, not a 404
    assert (await _verify(client, key, "three.example.com"))["status"] == "active"
    response, problem = await api(client, "POST", f"{path}/release", admin_key, release)
    assert response.status == 404 and "holds no domain binding" in problem["detail"]
    for bad, field in (({"kind": "site", "value": "x"}, "kind"), ({"kind": "domain"}, "value"),
                       ({"kind": "domain", "value": ""}, "value"),
                       ({"kind": "domain", "value": "x" * 1001}, "value")):  # fmt: skip
        response, problem = await api(client, "POST", f"{path}/release", admin_key, bad)
        assert response.status == 400 and problem["errors"][0]["field"] == field
    response, _ = await api(client, "GET", "/api/v1/licenses/999/bindings", admin_key)
    assert response.status == 404
    assert ("api", "license.release") in await _audit_actions(client)


# -- the attempt log ------------------------------------------------------------------------


async def test_attempts_filter_and_page_across_a_boundary_while_rows_arrive(client, admin_key):
    rows = [attempt(at_ms=T0 + i * 1000, reason=f"r{i}", license_id=7 if i % 2 else None,
                    source_ip=f"203.0.113.{i}", result="active" if i % 3 else "invalid")
            for i in range(10)]  # fmt: skip
    await store(client, *rows)
    response, page = await api(client, "GET", "/api/v1/attempts?limit=4", admin_key)
    assert response.status == 200
    assert [a["reason"] for a in page["items"]] == ["r9", "r8", "r7", "r6"]
    assert page["items"][0]["at"] == "2026-03-01T12:00:09.000Z"
    await store(client, attempt(at_ms=T0 + 60_000, reason="newer"))  # arrives meanwhile
    seen = [a["reason"] for a in page["items"]]
    while page["next_cursor"]:
        response, page = await api(client, "GET",
                                   f"/api/v1/attempts?limit=4&cursor={page['next_cursor']}",
                                   admin_key)  # fmt: skip
        seen += [a["reason"] for a in page["items"]]
    assert seen == [f"r{i}" for i in range(9, -1, -1)]  # none twice, none skipped

    async def reasons(query: str) -> list[str]:
        response, page = await api(client, "GET", f"/api/v1/attempts?{query}", admin_key)
        assert response.status == 200, page
        return [a["reason"] for a in page["items"]]

    assert await reasons("license=7") == ["r9", "r7", "r5", "r3", "r1"]
    assert await reasons("result=invalid") == ["r9", "r6", "r3", "r0"]
    assert await reasons("ip=203.0.113.4") == ["r4"]
    assert len(await reasons("ip=203.0.113.0/24")) == 10
    assert await reasons("reason=newer") == ["newer"]
    assert await reasons("since=2026-03-01T12:00:08Z&until=2026-03-01T12:00:10Z") == ["r9", "r8"]
    assert len(await reasons("domain=SHOP.example.com.")) == 11


async def test_attempt_filters_refuse_bad_values(client, admin_key):
    cases = [
        ("result=bogus", "result"), ("license=abc", "license"), ("license=0", "license"),
        ("ip=not-an-ip", "ip"), ("domain=bad domain!", "domain"), ("reason=a%20b", "reason"),
        ("since=yesterday", "since"), ("since=2026-03-01T12:00:00", "since"),
        ("since=2026-03-01T13:00:00Z&until=2026-03-01T12:00:00Z", "since"),
        ("cursor=nonsense", "cursor"), ("limit=0", "limit"), ("limit=201", "limit"),
        ("result=active&result=invalid", "result"), ("colour=red", "colour"),
    ]  # fmt: skip
    for query, field in cases:
        response, problem = await api(client, "GET", f"/api/v1/attempts?{query}", admin_key)
        assert response.status == 400 and response.content_type == PROBLEM, (query, problem)
        assert problem["errors"][0]["field"] == field, (query, problem)


# -- bans -----------------------------------------------------------------------------------


async def test_bans_add_list_lift_each_seen_at_the_next_check(client, admin_key):
    _, key = await _license(client, admin_key)
    assert (await _verify(client, key))["status"] == "active"
    headers = {**admin_key, "Idempotency-Key": "ban-1"}
    ban = {"kind": "domain", "value": "HTTPS://Shop.Example.com/x", "reason": "chargeback"}
    response, body = await api(client, "POST", "/api/v1/bans", headers, ban)
    assert response.status == 201, body
    assert body["value"] == "shop.example.com" and body["reason"] == "chargeback"
    assert body["created_by"].startswith("api:lsk_live_")
    assert response.headers["Location"] == f"/api/v1/bans/{body['id']}"
    assert (await _verify(client, key))["status"] == "suspended"
    response, replay = await api(client, "POST", "/api/v1/bans", headers, ban)
    assert response.status == 201 and replay == body
    response, problem = await api(client, "POST", "/api/v1/bans", admin_key, ban)
    assert response.status == 409 and "banned already" in problem["detail"]
    response, page = await api(client, "GET", "/api/v1/bans", admin_key)
    assert [b["id"] for b in page["items"]] == [body["id"]] and page["next_cursor"] is None

    response, _ = await api(client, "DELETE", f"/api/v1/bans/{body['id']}", admin_key)
    assert response.status == 204
    assert (await _verify(client, key))["status"] == "active"
    response, problem = await api(client, "DELETE", f"/api/v1/bans/{body['id']}", admin_key)
    assert response.status == 404
    assert ("api", "ban.add") in await _audit_actions(client)
    assert ("api", "ban.lift") in await _audit_actions(client)


async def test_bans_page_and_refuse_bad_input_writing_nothing(client, admin_key):
    for i in range(5):
        response, _ = await api(client, "POST", "/api/v1/bans", admin_key,
                                {"kind": "ip", "value": f"198.51.100.{i}"})  # fmt: skip
        assert response.status == 201
    response, page = await api(client, "GET", "/api/v1/bans?limit=3", admin_key)
    response, rest = await api(client, "GET", f"/api/v1/bans?limit=3&cursor={page['next_cursor']}",
                               admin_key)  # fmt: skip
    values = [b["value"] for b in page["items"] + rest["items"]]
    assert values == [f"198.51.100.{i}" for i in range(4, -1, -1)] and rest["next_cursor"] is None
    cases = [
        ({"kind": "email", "value": "x"}, "kind"),
        ({"kind": "ip", "value": "999.1.1.1"}, "value"),
        ({"kind": "domain", "value": "not a domain!"}, "value"),
        ({"kind": "ip", "value": ""}, "value"),
        ({"kind": "ip", "value": "x" * 301}, "value"),
        ({"kind": "ip", "value": "192.0.2.1", "reason": "x" * 501}, "reason"),
        ({"kind": "ip", "value": "192.0.2.1", "reason": "bell\x07"}, "reason"),
        ({"kind": "ip", "value": 5}, "value"),
        ({"kind": "ip", "value": "192.0.2.1", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        response, problem = await api(client, "POST", "/api/v1/bans", admin_key, body)
        assert response.status == 400, (body, problem)
        assert problem["errors"][0]["field"] == field, (body, problem)
    for bad in ("abc", "0", "99999999999999999999"):
        response, _ = await api(client, "DELETE", f"/api/v1/bans/{bad}", admin_key)
        assert response.status in (404, 405) and response.status != 500
    response, problem = await api(client, "GET", "/api/v1/bans?cursor=zzz", admin_key)
    assert response.status == 400 and problem["errors"][0]["field"] == "cursor"
    response, page = await api(client, "GET", "/api/v1/bans?limit=200", admin_key)
    assert len(page["items"]) == 5  # nothing written by the refusals


async def test_the_document_lists_the_new_operations_and_the_token_endpoint(client):
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    for path, method in (("/api/v1/licenses/{id}", "patch"), ("/api/v1/attempts", "get"),
                         ("/api/v1/bans/{id}", "delete"), ("/api/v1/tokens", "post"),
                         ("/api/v1/licenses/{id}/bindings/release", "post"),
                         ("/api/v1/tokens/jwks.json", "get")):  # fmt: skip
        assert method in paths[path], path
    token = paths["/api/v1/tokens"]["post"]
    assert token["security"] == [{"apiKey": []}, {}] and "x-scope" not in token
    assert not any(p["name"] == "Idempotency-Key" for p in token["parameters"])
    assert any(p["name"] == "Idempotency-Key" for p in paths["/api/v1/bans"]["post"]["parameters"])

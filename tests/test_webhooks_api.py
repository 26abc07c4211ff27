"""`/api/v1/webhooks` (issue #14): CRUD, the delivery log, resume and the public key, through
raw requests (scopes, hostile bodies: 4xx and nothing written) and through `api_client`."""

from __future__ import annotations

import json

import pytest

from license_server import appkeys
from license_server.api_client import ApiProblem, VendorApi
from license_server.app import create_app
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec
from license_server.staff.webhooks import EndpointSpec
from license_server.webhooks.delivery import Deliverer
from license_server.webhooks.signing import load_webhook_key, public_key_text
from tests.api_helpers import api, make_key
from tests.conftest import PRODUCT, with_sections

PROBLEM = "application/problem+json"
HOOKS = {"allow_private_targets": True, "allow_http": True, "send": False,
         "pause_after_failures": 1}  # fmt: skip


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(with_sections(settings, webhooks=HOOKS)))


@pytest.fixture
async def admin(client):
    _, headers = await make_key(client)
    return headers


async def _rows(client, sql):
    async with client.app[appkeys.RUNTIME].db.read() as conn:
        return await conn.fetch_all(sql)


def body(url, events=("license.created",), **extra):
    return {"url": url, "events": list(events), **extra}


async def test_create_read_update_delete(client, admin, receiver):
    response, created = await api(client, "POST", "/api/v1/webhooks", admin, body(receiver.url))
    assert response.status == 201, created
    assert response.headers["Location"] == f"/api/v1/webhooks/{created['id']}"
    assert created["enabled"] and not created["paused"] and created["created_by"].startswith("api:")
    path = f"/api/v1/webhooks/{created['id']}"
    response, read = await api(client, "GET", path, admin)
    assert read == created
    response, listed = await api(client, "GET", "/api/v1/webhooks", admin)
    assert listed["items"] == [created]
    response, changed = await api(
        client, "PUT", path, admin, body(receiver.url, ("alert.raised",), enabled=False)
    )
    assert response.status == 200 and changed["events"] == ["alert.raised"]
    assert not changed["enabled"]
    response, _ = await api(client, "DELETE", path, admin)
    assert response.status == 204
    for method, payload in (("GET", None), ("PUT", body(receiver.url)), ("DELETE", None)):
        response, _problem = await api(client, method, path, admin, payload)
        assert response.status == 404 and response.content_type == PROBLEM
    audit = await _rows(client, "SELECT action FROM audit_log WHERE target LIKE 'webhook:%'")
    assert [row["action"] for row in audit] == ["webhook.create", "webhook.update",
                                                "webhook.delete"]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body("https://127.0.0.1/x"), "url"),  # allowed here: settings allow private
        (body("ftp://hooks.example/"), "url"),
        (body("https://hooks.example/", ("license.exploded",)), "events"),
        (body("https://hooks.example/", ("license.created", "license.created")), "events"),
        (body("https://hooks.example/", ()), "events"),
        ({"url": "https://hooks.example/", "events": "license.created"}, "events"),
        ({"url": 5, "events": ["license.created"]}, "url"),
        (body("https://hooks.example/", enabled="yes"), "enabled"),
        (body("https://hooks.example/", secret="x"), "secret"),
        (body("https://hooks.example/" + "a" * 2100), "url"),
        (body("https://hooks.example/", description="x" * 201), "description"),
    ],
)
async def test_hostile_bodies_are_400_with_the_field_and_write_nothing(client, admin, payload,
                                                                       field):  # fmt: skip
    response, problem = await api(client, "POST", "/api/v1/webhooks", admin, payload)
    if field == "url" and payload["url"] == "https://127.0.0.1/x":
        assert response.status == 201  # the private-target setting is on in this app
        return
    assert response.status == 400, problem
    assert response.content_type == PROBLEM
    assert any(error["field"].startswith(field) for error in problem["errors"]), problem
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_the_ssrf_rules_apply_to_the_api_too(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings))  # defaults: public https only
    _, admin = await make_key(client)
    for url in ("https://127.0.0.1/x", "https://169.254.169.254/", "http://hooks.example/"):
        response, problem = await api(client, "POST", "/api/v1/webhooks", admin, body(url))
        assert response.status == 400 and problem["errors"][0]["field"] == "url", url
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_raw_hostile_bodies(client, admin):
    headers = {**admin, "Content-Type": "application/json"}
    for raw, status in (
        (b'{"url": "https://h.example/", "url": "https://i.example/", "events": []}', 400),
        (b'{"url": "https://h.example/\xff", "events": ["license.created"]}', 400),
        (b"[1, 2]", 400),
        (b"{" * 5000, 400),
        (b"x" * 40_000, 413),
    ):
        response = await client.post("/api/v1/webhooks", data=raw, headers=headers)
        assert response.status == status, raw[:40]
    response = await client.post(
        "/api/v1/webhooks", data=json.dumps(body("https://h.example/")),
        headers={**admin, "Content-Type": "text/plain"},
    )  # fmt: skip
    assert response.status == 415
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_scopes(client, receiver):
    _, reader = await make_key(client, ["webhook:read"], name="reader")
    response, _ = await api(client, "POST", "/api/v1/webhooks", reader, body(receiver.url))
    assert response.status == 403
    response, listed = await api(client, "GET", "/api/v1/webhooks", reader)
    assert response.status == 200 and listed == {"items": []}
    response, _ = await api(client, "GET", "/api/v1/webhooks", {})
    assert response.status == 401


async def test_the_public_key_needs_no_credential(client, settings):
    response, answer = await api(client, "GET", "/api/v1/webhooks/public-key", {})
    assert response.status == 200
    assert answer["public_key"] == public_key_text(load_webhook_key(settings.keys_dir))
    assert answer["signature_version"] == "v1a" and answer["tolerance_seconds"] == 300


async def test_deliveries_and_resume_through_the_client(client, admin, receiver):
    app = client.app
    runtime = app[appkeys.RUNTIME]
    secret = admin["Authorization"].removeprefix("Bearer ")
    deliverer = Deliverer(runtime.db, app[appkeys.SETTINGS].webhooks, app[appkeys.WEBHOOK_KEY])
    async with VendorApi(str(client.make_url("")).rstrip("/"), secret) as vendor:
        hook = await vendor.create_webhook(EndpointSpec(url=receiver.url,
                                                        events=("license.created",)))  # fmt: skip
        assert [h.id for h in await vendor.webhooks()] == [hook.id]
        await runtime.licenses.create_product(PRODUCT)
        spec = LicenseSpec(product="mymod", licensee="A", email="a@example.org")
        await runtime.licenses.issue_many(spec, 3, actor=CLI)
        receiver.answers.append(500)
        try:
            assert await deliverer.step() == 3
        finally:
            await deliverer.close()
        paused = await vendor.webhook(hook.id)
        assert paused.paused and "HTTP 500" in paused.paused_reason
        page = await vendor.webhook_deliveries(hook.id, limit=2)
        assert len(page.items) == 2 and page.next_before is not None
        rest = await vendor.webhook_deliveries(hook.id, before=page.next_before)
        everything = page.items + rest.items
        statuses = sorted(a.status for d in everything for a in d.attempts)
        assert statuses == [200, 200, 500]
        assert {d.state for d in everything} == {"delivered", "pending"}
        resumed = await vendor.resume_webhook(hook.id)
        assert not resumed.webhook.paused and resumed.redelivering == 1
        key = await vendor.webhook_public_key()
        assert key.public_key.startswith("whpk_")
        await vendor.delete_webhook(hook.id)
        with pytest.raises(ApiProblem) as refused:
            await vendor.webhook(hook.id)
        assert refused.value.status == 404

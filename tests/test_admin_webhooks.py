"""The admin's webhook pages: list and create, an endpoint's page (edit, the delivery log in
keyset pages, resume, redeliver, delete), the public key; a paused endpoint shown first under
a warning with its alert raised; hostile forms refused with nothing written."""

from __future__ import annotations

import re

import pytest

from license_server import appkeys
from license_server.app import create_app
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec
from license_server.webhooks.delivery import Deliverer
from license_server.webhooks.signing import load_webhook_key, public_key_text
from tests.conftest import with_sections
from tests.test_admin_licenses import PRODUCT, staff_session

HOOK_SETTINGS = {"allow_private_targets": True, "allow_http": True, "send": False,
                 "pause_after_failures": 2}  # fmt: skip


@pytest.fixture
async def client(aiohttp_client, settings):
    """The app with webhooks to loopback allowed and its own sending off: the test sends
    with a deliverer it drives (no background task racing it)."""
    return await aiohttp_client(create_app(with_sections(settings, webhooks=HOOK_SETTINGS)))


@pytest.fixture
async def deliverer(client):
    app = client.app
    runtime = app[appkeys.RUNTIME]
    deliverer = Deliverer(runtime.db, app[appkeys.SETTINGS].webhooks, app[appkeys.WEBHOOK_KEY],
                          alerts=runtime.alerts)  # fmt: skip
    yield deliverer
    await deliverer.close()


def _form(browser, url, events=("license.created",), **extra):
    form = {"csrf": "csrf-admin", "url": url, "description": "Billing"}
    form.update({f"event.{name}": "on" for name in events})
    form.update(extra)
    return form


async def _issue(client, count=1):
    runtime = client.app[appkeys.RUNTIME]
    if not await runtime.licenses.products():
        await runtime.licenses.create_product(PRODUCT)
    spec = LicenseSpec(product="mymod", licensee="A", email="a@example.org")
    await runtime.licenses.issue_many(spec, count, actor=CLI)


async def _rows(client, sql, params=()):
    async with client.app[appkeys.RUNTIME].db.read() as conn:
        return await conn.fetch_all(sql, params)


async def test_create_then_see_the_endpoint_and_the_public_key(client, receiver, settings):
    browser = await staff_session(client, "admin")
    response, _ = await browser.post("/admin/webhooks", _form(browser, receiver.url))
    assert response.status == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/admin/webhooks/\d+", location)
    _, page = await browser.get(location)
    assert receiver.url in page and 'name="event.license.created" value="on" checked' in page
    _, listing = await browser.get("/admin/webhooks")
    key = public_key_text(load_webhook_key(settings.keys_dir))
    assert key in listing and 'href="/admin/webhooks"' in listing  # nav link
    [audit] = await _rows(client, "SELECT action FROM audit_log WHERE target LIKE 'webhook:%'")
    assert audit["action"] == "webhook.create"


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ({"url": "ftp://hooks.example/"}, 400, "https://"),
        ({"url": ""}, 400, "url"),
        ({"events": ()}, 400, "events"),
        ({"events": ("license.exploded",)}, 400, "unknown event type"),
        ({"url": "https://hooks.example/" + "a" * 2100}, 400, "url"),
        ({"description": "x" * 250}, 400, "description"),
        ({"description": "a\u0007b"}, 400, "description"),
    ],
)
async def test_bad_forms_are_refused_and_nothing_is_written(client, form, status, says):
    browser = await staff_session(client, "admin")
    events = form.pop("events", ("license.created",))
    data = _form(browser, form.pop("url", "https://hooks.example/in"), events, **form)
    response, page = await browser.post("/admin/webhooks", data)
    assert response.status == status and says in page
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_loopback_is_refused_when_private_targets_are_not_allowed(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings))  # the defaults
    browser = await staff_session(client, "admin")
    response, page = await browser.post(
        "/admin/webhooks", _form(browser, "https://127.0.0.1:8443/hook")
    )
    assert response.status == 400 and "not public" in page
    response, page = await browser.post("/admin/webhooks", _form(browser, "http://hooks.example/"))
    assert response.status == 400 and "https://" in page
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_raw_hostile_bodies_are_refused(client):
    browser = await staff_session(client, "admin")
    url = "https%3A%2F%2Fhooks.example%2Fin"
    for body, expected in (
        (f"csrf=csrf-admin&url={url}&url={url}&event.license.created=on", 400),  # repeated
        ("csrf=csrf-admin&url=%FF%FE&event.license.created=on", 400),  # not UTF-8
        ("csrf=csrf-admin&url=" + "a" * 20_000, 413),  # oversize
        (f"csrf=wrong&url={url}&event.license.created=on", 403),  # CSRF
    ):
        response, _ = await browser.post(
            "/admin/webhooks", body, **{"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status == expected, body[:60]
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []


async def test_paused_endpoint_is_shown_with_its_alert_and_resume_redelivers(
    client, receiver, deliverer
):
    browser = await staff_session(client, "admin")
    response, _ = await browser.post("/admin/webhooks", _form(browser, receiver.url))
    endpoint = response.headers["Location"]
    receiver.answers.extend([500, 500])
    await _issue(client, 2)
    assert await deliverer.step() == 2
    [alert] = await _rows(client, "SELECT * FROM alerts WHERE detector = 'webhook_failing'")
    assert alert["state"] == "open"
    _, listing = await browser.get("/admin/webhooks")
    assert "1 endpoint paused" in listing and 'role="alert"' in listing
    assert "2 failed attempts in a row; last: HTTP 500" in listing
    _, page = await browser.get(endpoint)
    assert "Paused since" in page and "HTTP 500" in page and "Resume and redeliver" in page
    response, _ = await browser.post(f"{endpoint}/resume", {"csrf": "csrf-admin"})
    assert response.status == 303
    _, page = await browser.get(response.headers["Location"])
    assert "2 deliveries will be sent again" in page
    assert await deliverer.drain() == 2
    states = await _rows(client, "SELECT state FROM webhook_deliveries")
    assert [row["state"] for row in states] == ["delivered", "delivered"]
    _, page = await browser.get(endpoint)
    assert "Paused since" not in page and page.count("HTTP 200") == 2


async def test_deliveries_are_listed_in_keyset_pages_and_can_be_redelivered(
    client, receiver, deliverer
):
    browser = await staff_session(client, "admin")
    response, _ = await browser.post("/admin/webhooks", _form(browser, receiver.url))
    endpoint = response.headers["Location"]
    await _issue(client, 53)
    _, first = await browser.get(endpoint)
    ids = [int(n) for n in re.findall(r'name="delivery" value="(\d+)"', first)]
    older = re.search(r'href="([^"]+\?before=\d+)"', first).group(1)
    _, second = await browser.get(older)
    more = [int(n) for n in re.findall(r'name="delivery" value="(\d+)"', second)]
    assert len(ids) == 50 and len(more) == 3 and max(more) < min(ids)
    response, _ = await browser.get(f"{endpoint}?before=x")
    assert response.status == 400
    await deliverer.drain()
    response, page = await browser.post(
        f"{endpoint}/redeliver", {"csrf": "csrf-admin", "delivery": str(ids[0])}
    )
    assert response.status == 303
    _, page = await browser.get(response.headers["Location"])
    assert f"Delivery {ids[0]} will be sent again" in page
    assert await deliverer.drain() == 1
    assert len(receiver.received) == 54
    for bad in ("", "0", "x", "99999999999999999999", str(ids[0] + 1000)):
        response, _ = await browser.post(
            f"{endpoint}/redeliver", {"csrf": "csrf-admin", "delivery": bad}
        )
        assert response.status == 400, bad


async def test_edit_and_delete(client, receiver):
    browser = await staff_session(client, "admin")
    response, _ = await browser.post("/admin/webhooks", _form(browser, receiver.url))
    endpoint = response.headers["Location"]
    response, _ = await browser.post(
        endpoint, _form(browser, receiver.url + "?v=2", ("license.revoked", "alert.raised"))
    )
    assert response.status == 303
    [row] = await _rows(client, "SELECT * FROM webhook_endpoints")
    assert row["url"].endswith("?v=2") and not row["enabled"]  # the box was not ticked
    assert row["events"] == '["alert.raised", "license.revoked"]'
    response, page = await browser.post(endpoint, _form(browser, "gopher://x/"))
    assert response.status == 400 and "https://" in page
    response, _ = await browser.post(f"{endpoint}/delete", {"csrf": "csrf-admin"})
    assert response.status == 303
    assert await _rows(client, "SELECT * FROM webhook_endpoints") == []
    response, _ = await browser.post(f"{endpoint}/delete", {"csrf": "csrf-admin"})
    assert response.status == 400
    response, _ = await browser.get(endpoint)
    assert response.status == 303  # gone: back to the list
    response, _ = await browser.post(f"{endpoint}/explode", {"csrf": "csrf-admin"})
    assert response.status == 404


async def test_support_sees_no_webhooks(client):
    browser = await staff_session(client, "support")
    _, page = await browser.get("/admin")
    assert 'href="/admin/webhooks"' not in page
    response, _ = await browser.get("/admin/webhooks")
    assert response.status == 403

"""The admin's bans page (issue #12): add and lift through the pages, in force at the next real
check, audited with who and what; hostile and malformed input refused with nothing written."""

from __future__ import annotations

import json
import re

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from tests.test_admin import field
from tests.test_admin_licenses import staff_session
from tests.verify_helpers import issue, product, reference_client


async def audit_rows(client, n: int = 10) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        return await staff_rows.audit_page(conn, None, n)


async def test_a_ban_made_in_the_admin_refuses_the_next_check_and_lifting_restores_it(client):
    runtime = client.app[RUNTIME]
    await product(runtime, seats=5)
    _, key = await issue(runtime, seats=5)
    checker = reference_client(client, runtime)
    assert (await checker.check(key, "pirate-shop.com")).status == "active"

    browser = await staff_session(client, "license_manager")
    response, page = await browser.get("/admin/bans")
    assert response.status == 200 and "No ban." in page
    response, _ = await browser.post(
        "/admin/bans",
        {"csrf": field(page, "csrf"), "kind": "domain", "value": "https://WWW.Pirate-Shop.com/x",
         "reason": "resold <keys> & more"},
    )  # fmt: skip
    assert response.status == 303
    result = await checker.check(key, "pirate-shop.com")  # at once: no cache to wait out
    assert (result.status, result.reason) == ("suspended", "banned")

    _, page = await browser.get("/admin/bans")
    assert "pirate-shop.com" in page and "resold &lt;keys&gt; &amp; more" in page
    assert "<td>license_manager</td>" in page  # who: the account's name
    [audit] = [row for row in await audit_rows(client) if row["action"] == "ban.add"]
    assert audit["target"] == "ban:domain:pirate-shop.com" and audit["actor_kind"] == "staff"
    assert json.loads(audit["detail"])["after"]["reason"] == "resold <keys> & more"

    response, _ = await browser.post(
        "/admin/bans/lift",
        {"csrf": field(page, "csrf"), "kind": "domain", "value": "pirate-shop.com"},
    )
    assert response.status == 303
    assert (await checker.check(key, "pirate-shop.com")).status == "active"
    lifted = [row for row in await audit_rows(client) if row["action"] == "ban.lift"]
    assert json.loads(lifted[0]["detail"])["before"]["value"] == "pirate-shop.com"
    response, page = await browser.post(
        "/admin/bans/lift",
        {"csrf": "csrf-license_manager", "kind": "domain", "value": "pirate-shop.com"},
    )
    assert response.status == 409 and "is not banned" in page


async def test_an_ip_range_ban_from_the_admin(client):
    runtime = client.app[RUNTIME]
    await product(runtime, seats=5)
    _, key = await issue(runtime, seats=5)
    checker = reference_client(client, runtime)
    browser = await staff_session(client, "admin")
    response, _ = await browser.post(
        "/admin/bans", {"csrf": "csrf-admin", "kind": "ip", "value": " 203.0.113.77/24 "}
    )
    assert response.status == 303
    assert (await runtime.bans.all())[0]["value"] == "203.0.113.0/24"  # the CLI's parser
    assert (await checker.check(key, "fine.com", ip="203.0.113.5")).status == "suspended"
    assert (await checker.check(key, "fine.com", ip="203.0.114.5")).status == "active"


async def test_the_ban_shortcut_fills_the_form(client):
    browser = await staff_session(client, "license_manager")
    _, page = await browser.get('/admin/bans?kind=ip&value=198.51.100.7"><script>')
    assert 'value="198.51.100.7&#34;&gt;&lt;script&gt;"' in page and "<script>" not in page
    assert '<option value="ip" selected>' in page


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"kind": "domain", "value": "<script>alert(1)</script>"}, "domain"),
        ({"kind": "domain", "value": "exa mple.com"}, "domain"),
        ({"kind": "domain", "value": ""}, "value:"),
        ({"kind": "domain", "value": "a" * 301}, "at most 300"),
        ({"kind": "ip", "value": "999.1.1.1"}, "ip"),
        ({"kind": "ip", "value": "10.0.0.0/33"}, "ip"),
        ({"kind": "ip", "value": "fe80::1%eth0/64"}, "zone"),
        ({"kind": "country", "value": "pirate.net"}, "kind:"),
        ({"kind": "", "value": "pirate.net"}, "kind:"),
        ({"value": "pirate.net"}, "kind:"),
        ({"kind": "domain", "value": "pirate.net", "reason": "two\nlines"}, "control"),
        ({"kind": "domain", "value": "pirate.net", "reason": "x" * 501}, "at most 500"),
        ({"kind": "domain", "value": "pirate.net", "reason": "x" * 2001}, "at most 2000"),
    ],
)
async def test_bad_bans_are_refused_on_the_page_and_store_nothing(client, form, expected):
    browser = await staff_session(client, "admin")
    response, page = await browser.post("/admin/bans", {"csrf": "csrf-admin", **form})
    assert response.status == 400, page
    assert expected in page and "<script>alert" not in page
    assert await client.app[RUNTIME].bans.all() == []
    assert not [row for row in await audit_rows(client) if row["action"].startswith("ban.")]


async def test_malformed_posts_store_nothing(client):
    browser = await staff_session(client, "admin")
    good = {"csrf": "csrf-admin", "kind": "domain", "value": "pirate.net"}
    # Repeated field, wrong encoding, oversize body, no CSRF token, another site's Origin.
    response, _ = await browser.post(
        "/admin/bans", [("csrf", "csrf-admin"), ("kind", "domain"), ("value", "a.com"),
                        ("value", "b.com")],
    )  # fmt: skip
    assert response.status == 400
    response, _ = await browser.post(
        "/admin/bans", b"csrf=csrf-admin&kind=domain&value=%ff%fe.com",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status in (400, 403)
    response, _ = await browser.post("/admin/bans", {**good, "reason": "x" * 20_000})
    assert response.status == 413
    response, _ = await browser.post("/admin/bans", {**good, "csrf": "wrong"})
    assert response.status == 403
    response, _ = await browser.post("/admin/bans", good, origin="https://evil.example")
    assert response.status == 403
    response, _ = await browser.post("/admin/bans/lift", {"csrf": "csrf-admin", "kind": "x"})
    assert response.status == 400
    for query in ("before=abc", "before=1&before=2", "before=" + "9" * 30):
        response, _ = await browser.get("/admin/bans?" + query)
        assert response.status == 400, query
    assert await client.app[RUNTIME].bans.all() == []


async def test_roles_without_ban_rights_see_no_form(client):
    await client.app[RUNTIME].bans.ban("domain", "pirate.net", "x")
    browser = await staff_session(client, "support")  # ban:read only
    response, page = await browser.get("/admin/bans")
    assert response.status == 200 and "pirate.net" in page
    assert 'action="/admin/bans"' not in page and "/admin/bans/lift" not in page
    response, _ = await browser.post(
        "/admin/bans/lift", {"csrf": "csrf-support", "kind": "domain", "value": "pirate.net"}
    )
    assert response.status == 403
    assert len(await client.app[RUNTIME].bans.all()) == 1


async def test_bans_page_by_keyset(client, monkeypatch):
    from license_server.staff import log_desk

    monkeypatch.setattr(log_desk, "BAN_PAGE_SIZE", 3)
    for n in range(7):
        await client.app[RUNTIME].bans.ban("domain", f"pirate{n}.net")
    browser = await staff_session(client, "read_only")
    seen, path = [], "/admin/bans"
    while path:
        _, page = await browser.get(path)
        seen += [int(n) for n in re.findall(r">pirate(\d)\.net<", page)]
        more = re.search(r'href="(/admin/bans\?before=\d+)"', page)
        path = more.group(1) if more else ""
    assert seen == [6, 5, 4, 3, 2, 1, 0]

"""The admin's license pages (issue #12): list, search, detail, actions, showing a key; and
the role x route matrix: every admin route walked with every role, allowed or forbidden as
staff/rbac.py says, checked on the route and again in the service."""

from __future__ import annotations

import re

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec
from license_server.staff import rbac, sessions
from license_server.web.admin import CONSOLE, STAFF
from tests.conftest import PRODUCT
from tests.test_admin import Browser, field


async def staff_session(client, role: str) -> Browser:
    """A signed-in member of staff with `role` (both factors passed), without the sign-in
    pages (tests/test_admin.py walks those)."""
    runtime = client.app[RUNTIME]
    session_id = sessions.new_session_id()
    async with runtime.db.write() as conn:
        account_id = await staff_rows.insert_account(
            conn, email=f"{role}@example.org", name=role, role=role, password_hash="x", now=1
        )
        await staff_rows.set_totp(conn, account_id, b"enrolled", 1)
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account_id,
            csrf_token=f"csrf-{role}", mfa_passed=True, now=runtime.licenses.now(),
        )  # fmt: skip
    browser = Browser(client)
    browser.cookie = session_id
    return browser


async def issue(client, **spec) -> tuple[int, str]:
    runtime = client.app[RUNTIME]
    try:
        await runtime.licenses.create_product(PRODUCT)
    except Exception:
        pass  # made by an earlier call
    license, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="Smith & Sons", email="ops@smith.example", **spec),
        actor=CLI,
    )
    return license.id, key


async def test_a_license_manager_finds_suspends_and_reveals(client):
    license_id, key = await issue(client)
    browser = await staff_session(client, "license_manager")
    response, page = await browser.get("/admin/licenses")
    assert response.status == 200 and f"/admin/licenses/{license_id}" in page
    assert "Smith &amp; Sons" in page  # escaped
    response, page = await browser.get(f"/admin/licenses?q={key}")
    assert f"/admin/licenses/{license_id}" in page
    response, page = await browser.get(f"/admin/licenses/{license_id}")
    assert response.status == 200 and "Suspend" in page and key not in page
    csrf = field(page, "csrf")
    response, _ = await browser.post(f"/admin/licenses/{license_id}/suspend", {"csrf": csrf})
    assert response.status == 303
    _, page = await browser.get(f"/admin/licenses/{license_id}")
    assert "suspended" in page and "Unsuspend" in page
    response, page = await browser.post(f"/admin/licenses/{license_id}/suspend", {"csrf": csrf})
    assert response.status == 409 and "cannot suspend" in page
    response, page = await browser.post(f"/admin/licenses/{license_id}/reveal", {"csrf": csrf})
    assert response.status == 200 and key in page
    async with client.app[RUNTIME].db.read() as conn:
        actions = [row["action"] for row in await staff_rows.audit_page(conn, None, 10)]
    assert actions[:2] == ["license.reveal_key", "license.suspend"]  # who, in the audit log


async def test_search_by_domain_pages_and_bad_queries(client):
    license_id, _ = await issue(client)
    async with client.app[RUNTIME].db.write() as conn:
        from license_server.db.licenses import upsert_binding

        await upsert_binding(conn, license_id, kind="domain", value="shop.example.com",
                             raw_value="Shop.Example.com", is_dev=False, now=1)  # fmt: skip
    browser = await staff_session(client, "read_only")
    _, page = await browser.get("/admin/licenses?q=SHOP.example.com")
    assert f"/admin/licenses/{license_id}" in page
    for query in ("before=abc", "status=nonsense", "q=a&q=b"):
        response, page = await browser.get(f"/admin/licenses?{query}")
        assert response.status == 400 and "<script" not in page
    response, page = await browser.get("/admin/licenses?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status == 200 and "<script>alert" not in page
    response, _ = await browser.get("/admin/licenses/99999999999999999999")
    assert response.status == 404


async def test_the_list_pages_by_keyset(client):
    for _ in range(53):
        await issue(client)
    browser = await staff_session(client, "read_only")
    _, first = await browser.get("/admin/licenses")
    ids = [int(n) for n in re.findall(r'href="/admin/licenses/(\d+)"', first)]
    before = re.search(r"before=(\d+)", first).group(1)
    _, second = await browser.get(f"/admin/licenses?before={before}")
    more = [int(n) for n in re.findall(r'href="/admin/licenses/(\d+)"', second)]
    assert len(ids) == 50 and len(more) == 3 and not set(ids) & set(more)
    assert ids == sorted(ids, reverse=True) and max(more) < min(ids)


# -- the role x route matrix ------------------------------------------------------------------

ROUTES = [
    ("GET", "/admin/licenses", "license:read"),
    ("GET", "/admin/licenses/{id}", "license:read"),
    ("POST", "/admin/licenses/{id}/suspend", "license:suspend"),
    ("POST", "/admin/licenses/{id}/unsuspend", "license:suspend"),
    ("POST", "/admin/licenses/{id}/reissue", "license:reissue"),
    ("POST", "/admin/licenses/{id}/revoke", "license:revoke"),
    ("POST", "/admin/licenses/{id}/reveal", "license:reveal_key"),
    ("GET", "/admin/products", "product:read"),
    ("POST", "/admin/products", "product:create"),
    ("GET", "/admin/licenses/new", "license:create"),
    ("POST", "/admin/licenses/new", "license:create"),
    ("GET", "/admin/staff", "staff:read"),
    ("POST", "/admin/staff/invite", "staff:create"),
    ("POST", "/admin/staff/{other}/disable", "staff:update"),
    ("POST", "/admin/staff/{other}/enable", "staff:update"),
    ("POST", "/admin/staff/{other}/reset-mfa", "staff:reset_mfa"),
    ("GET", "/admin/attempts", "attempt:read"),
    ("GET", "/admin/attempts.csv", "attempt:export"),
    ("GET", "/admin/bans", "ban:read"),
    ("POST", "/admin/bans", "ban:create"),
    ("POST", "/admin/bans/lift", "ban:delete"),
    ("GET", "/admin/audit", "audit:read"),
    ("POST", "/admin/audit/verify", "audit:read"),
    ("GET", "/admin/security", "security_event:read"),
    ("GET", "/admin/products/{code}", "product:read"),
    ("POST", "/admin/products/{code}", "product:update"),
    ("POST", "/admin/licenses/{id}/edit/expiry", "license:update"),
    ("POST", "/admin/licenses/{id}/edit/rules", "license:update"),
    ("POST", "/admin/licenses/{id}/edit/reissues", "license:reissue"),
    ("POST", "/admin/licenses/{id}/bindings/release", "binding:release"),
    ("GET", "/admin/keys", "signing_key:read"),
    ("POST", "/admin/keys", "signing_key:create"),
    ("POST", "/admin/keys/activate", "signing_key:activate"),
    ("POST", "/admin/keys/retire", "signing_key:retire"),
    ("GET", "/admin/licenses.csv", "license:read"),
    ("GET", "/admin/licenses/bulk", "license:create"),
    ("POST", "/admin/licenses/bulk", "license:create"),
    ("GET", "/admin/api-keys", "api_key:read"),
    ("POST", "/admin/api-keys", "api_key:create"),
    ("POST", "/admin/api-keys/revoke", "api_key:revoke"),
    ("GET", "/admin/webhooks", "webhook:read"),
    ("POST", "/admin/webhooks", "webhook:create"),
    ("GET", "/admin/webhooks/{id}", "webhook:read"),
    ("POST", "/admin/webhooks/{id}", "webhook:update"),
    ("POST", "/admin/webhooks/{id}/resume", "webhook:update"),
    ("POST", "/admin/webhooks/{id}/redeliver", "webhook:update"),
    ("POST", "/admin/webhooks/{id}/delete", "webhook:delete"),
    ("GET", "/admin/alerts", "alert:read"),
    ("GET", "/admin/alerts/{alert}", "alert:read"),
    ("POST", "/admin/alerts/{alert}/acknowledge", "alert:acknowledge"),
    ("POST", "/admin/alerts/{alert}/resolve", "alert:acknowledge"),
]


# Routes that need no permission: the sign-in flow itself (each checks its own state).
SIGN_IN_ROUTES = {
    ("GET", ""), ("GET", "/"), ("*", "/setup/{token}"), ("*", "/login"), ("*", "/enrol"),
    ("*", "/mfa"), ("POST", "/logout"), ("POST", "/sessions/end-all"), ("*", "/password"),
}  # fmt: skip


def test_the_matrix_covers_every_admin_route():
    """A new admin route fails here until it is in ROUTES (with its permission) or is part of
    the sign-in flow: no route escapes the role x route walk."""
    from license_server.staff.console import ACTION_PERMISSIONS
    from license_server.web.admin import admin_app

    def expand(routes):  # a route for any method ("*") answers GET and POST here
        return {
            (m, p)
            for method, p in routes
            for m in (("GET", "POST") if method == "*" else (method,))
        }

    registered = expand(
        (route.method, route.resource.canonical)
        for route in admin_app().router.routes()
        if route.method != "HEAD"
    )
    walked = {
        (method, re.sub(r"\{(id|other)\}/[a-z-]+$", "{id}/{action}", path.removeprefix("/admin")))
        for method, path, _ in ROUTES
    }
    assert registered == expand(SIGN_IN_ROUTES) | walked
    actions = {
        t.rsplit("/", 1)[1] for _, t, _ in ROUTES if re.fullmatch(r"/admin/licenses/\{id\}/\w+", t)
    }
    assert actions == {a.value for a in ACTION_PERMISSIONS} | {"reveal"}


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_every_route_with_every_role(client, role):
    license_id, _ = await issue(client)
    other = await _other_account(client)
    alert = await _an_alert(client, license_id)
    browser = await staff_session(client, role)
    for method, template, permission in ROUTES:
        path = template.format(id=license_id, other=other, code="mymod", alert=alert)
        if method == "GET":
            response, page = await browser.get(path)
        else:
            form = {"csrf": f"csrf-{role}", "role": "support"}
            response, page = await browser.post(path, form)
        allowed = rbac.has_permission(role, permission)
        if allowed:
            # Allowed: done (200, 303), or refused for its input or state, never for the role.
            assert response.status in (200, 303, 400, 409), (role, path, response.status)
        else:
            assert response.status == 403, (role, path, response.status)
            assert "Your role does not allow this." in page
        # Unsuspend needs a suspended license, reissue an active or pending one: put it back.
        await _reset(client, license_id)


async def _other_account(client) -> int:
    async with client.app[RUNTIME].db.write() as conn:
        other = await staff_rows.insert_account(
            conn, email="other@example.org", name="O", role="support", password_hash="x", now=1
        )
        await staff_rows.set_totp(conn, other, b"enrolled", 1)
    return other


async def _an_alert(client, license_id: int) -> int:
    from license_server.licensing.alerts import AlertSignal, Severity

    signal = AlertSignal("key_sharing", f"license:{license_id}", Severity.LOW, "Shared.",
                         license_id=license_id)  # fmt: skip
    return (await client.app[RUNTIME].alerts.raise_(signal)).alert_id


async def _reset(client, license_id: int) -> None:
    runtime = client.app[RUNTIME]
    license = await runtime.licenses.license_by_id(license_id)
    if license.status.value == "revoked":
        return
    if license.status.value != "suspended":
        await runtime.licenses.apply(license_id, Action.SUSPEND, actor=CLI)


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_the_service_checks_again_without_the_route(client, role):
    """Called directly (a future API or a bug in a route), the console still refuses."""
    license_id, _ = await issue(client)
    browser = await staff_session(client, role)
    staff = await client.app[STAFF].session(browser.cookie)
    console = client.app[CONSOLE]
    for action, permission in (
        (Action.SUSPEND, "license:suspend"),
        (Action.REVOKE, "license:revoke"),
    ):
        if rbac.has_permission(role, permission):
            continue
        with pytest.raises(rbac.PermissionDenied):
            await console.apply(staff, license_id, action)
    if not rbac.has_permission(role, "license:reveal_key"):
        with pytest.raises(rbac.PermissionDenied):
            await console.reveal_key(staff, license_id)


@pytest.mark.parametrize(
    ("path", "form", "expected"),
    [
        ("/admin/products", {"code": "<x>", "name": "N"}, "code:"),
        ("/admin/products", {"code": "ok", "name": "N", "seats": "many"}, "seats:"),
        ("/admin/products", {"code": "ok", "name": "N", "seats": "-1"}, "seats:"),
        ("/admin/licenses/new", {"product": "mymod", "licensee": "A", "email": "nope"}, "email:"),
        ("/admin/licenses/new", {"product": "nope", "licensee": "A", "email": "a@b.org"}, "nope"),
        (
            "/admin/licenses/new",
            {"product": "mymod", "licensee": "A", "email": "a@b.org", "expires": "31/12/2027"},
            "expires:",
        ),
        (  # the day after it does not exist: was an OverflowError, a 500
            "/admin/licenses/new",
            {"product": "mymod", "licensee": "A", "email": "a@b.org", "expires": "9999-12-31"},
            "too far ahead",
        ),
        (
            "/admin/licenses/new",
            {"product": "mymod", "licensee": "A", "email": "a@b.org", "domains": "exa mple.com"},
            "domains",
        ),
    ],
)
async def test_bad_forms_are_refused_on_the_page_and_store_nothing(client, path, form, expected):
    await issue(client)  # the product "mymod" and one license
    browser = await staff_session(client, "admin")
    runtime = client.app[RUNTIME]
    before = (len(await runtime.licenses.products()), await runtime.licenses.count_by_status())
    response, page = await browser.post(path, {"csrf": "csrf-admin", **form})
    assert response.status in (400, 409), page
    assert expected in page and "<x>" not in page
    after = (len(await runtime.licenses.products()), await runtime.licenses.count_by_status())
    assert after == before

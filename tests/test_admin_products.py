"""The admin's product pages (issue #12): the create form offers every create-product option,
a product's page edits every update-product option and the features, through the one write
path (audited with before/after values, the secret only as "set"), seen by the next check;
the WHMCS secret is never shown back; hostile forms are a 400 page with nothing written."""

from __future__ import annotations

import hashlib

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import products as product_rows
from license_server.db import staff as staff_rows
from license_server.staff import rbac
from tests.test_admin_license_edit import audit_rows, verify
from tests.test_admin_licenses import issue, staff_session
from tests.test_whmcs import check, sample_parse

# The edit form as the page posts it, with the product's current values (tests/conftest.py).
FORM = {
    "name": "My Module", "seats": "2", "local_key_days": "7", "grace_days": "14",
    "dev_host_allowance": "3", "max_reissues": "", "features": "", "whmcs_action": "keep",
    "whmcs_secret": "", "reissue_cooldown_hours": "0",
}  # fmt: skip


async def admin(client, role: str = "admin"):
    browser = await staff_session(client, role)
    browser.csrf = f"csrf-{role}"
    return browser


async def stored(client, code: str = "mymod") -> dict:
    async with client.app[RUNTIME].db.read() as conn:
        return dict(await product_rows.product_by(conn, "code", code))


async def unchanged(client) -> tuple:
    async with client.app[RUNTIME].db.read() as conn:
        rows = await product_rows.all_products(conn)
        audit = await staff_rows.audit_page(conn, None, 10_000)
    return [dict(row) for row in rows], len(audit)


async def test_the_list_links_each_product_to_its_page(client):
    await issue(client)
    browser = await admin(client, "read_only")
    _, page = await browser.get("/admin/products")
    assert 'href="/admin/products/mymod"' in page
    response, page = await browser.get("/admin/products/mymod")
    assert response.status == 200 and "My Module" in page
    assert 'action="/admin/products/mymod"' not in page  # read_only: no form, the settings
    assert "Reissue limit" in page and "unlimited" in page
    response, _ = await browser.get("/admin/products/nope")
    assert response.status == 404


async def test_the_create_form_takes_every_create_product_option(client):
    browser = await admin(client, "license_manager")
    _, page = await browser.get("/admin/products")
    for name in ("code", "name", "key_prefix", "seats", "local_key_days", "grace_days",
                 "dev_host_allowance", "features", "max_reissues", "whmcs_secret", "free_trial",
                 "allow_domain_conflict", "allow_ip_conflict",
                 "allow_directory_conflict"):  # fmt: skip
        assert f'name="{name}"' in page, name
    response, _ = await browser.post("/admin/products", {
        "csrf": browser.csrf, "code": "Shop.Pro", "name": "Shop Pro", "key_prefix": "SHP",
        "seats": "3", "local_key_days": "10", "grace_days": "5", "dev_host_allowance": "1",
        "features": "reports\n  api  \n", "max_reissues": "4", "whmcs_secret": "top-secret",
        "free_trial": "on", "allow_ip_conflict": "on",
    })  # fmt: skip
    assert response.status == 303
    product = await client.app[RUNTIME].licenses.product("shop.pro")
    assert (product.key_prefix, product.seats, product.local_key_days, product.grace_days,
            product.dev_host_allowance, product.features, product.max_reissues) == (
        "SHP", 3, 10, 5, 1, ("reports", "api"), 4)  # fmt: skip
    assert product.free_trial and product.allow_ip_conflict and product.has_whmcs_secret
    assert not product.allow_domain_conflict and not product.allow_directory_conflict
    assert await client.app[RUNTIME].licenses.whmcs_secret(product) == "top-secret"
    _, page = await browser.get("/admin/products")
    assert "top-secret" not in page


async def test_a_refused_create_form_does_not_echo_the_secret(client):
    browser = await admin(client)
    response, page = await browser.post("/admin/products", {
        "csrf": browser.csrf, "code": "ok", "name": "N", "seats": "0",
        "whmcs_secret": "do-not-echo",
    })  # fmt: skip
    assert response.status == 400 and "seats:" in page and "do-not-echo" not in page


async def test_editing_every_option_is_stored_audited_and_seen_by_the_next_check(client):
    runtime = client.app[RUNTIME]
    _, key = await issue(client)
    answer = await verify(client, key)
    assert answer["license"]["features"] == [] and answer["license"]["seats"] == 2
    browser = await admin(client, "license_manager")
    _, page = await browser.get("/admin/products/mymod")
    assert "s3cret" not in page  # the secret is never shown back
    response, _ = await browser.post("/admin/products/mymod", {
        "csrf": browser.csrf, **FORM, "name": "My Module Pro", "seats": "5",
        "local_key_days": "30", "grace_days": "0", "dev_host_allowance": "0",
        "max_reissues": "2", "features": "reports\napi", "free_trial": "on",
        "allow_domain_conflict": "on", "allow_ip_conflict": "on",
        "allow_directory_conflict": "on",
    })  # fmt: skip
    assert response.status == 303
    assert response.headers["Location"] == "/admin/products/mymod?saved=1"
    _, page = await browser.get("/admin/products/mymod?saved=1")
    assert "Saved." in page and "My Module Pro" in page
    product = await runtime.licenses.product("mymod")
    assert (product.name, product.seats, product.local_key_days, product.grace_days,
            product.dev_host_allowance, product.max_reissues, product.features) == (
        "My Module Pro", 5, 30, 0, 0, 2, ("reports", "api"))  # fmt: skip
    assert product.free_trial and product.allow_domain_conflict
    assert product.allow_ip_conflict and product.allow_directory_conflict
    answer = await verify(client, key)  # the very next check
    assert answer["license"]["features"] == ["reports", "api"]
    assert answer["license"]["seats"] == 5
    row = (await audit_rows(client))[0]
    assert (row["action"], row["target"], row["actor_kind"]) == (
        "license.product",
        "product:mymod",
        "staff",
    )
    assert row["detail"]["before"] == {
        "name": "My Module", "seats": 2, "local_key_days": 7, "grace_days": 14,
        "dev_host_allowance": 3, "max_reissues": None, "features": [], "free_trial": False,
        "allow_domain_conflict": False, "allow_ip_conflict": False,
        "allow_directory_conflict": False,
    }  # fmt: skip
    assert row["detail"]["after"]["max_reissues"] == 2
    assert row["detail"]["after"]["features"] == ["reports", "api"]
    # Back to unlimited reissues, no features, checkboxes unticked.
    response, _ = await browser.post("/admin/products/mymod", {"csrf": browser.csrf, **FORM})
    product = await runtime.licenses.product("mymod")
    assert (product.max_reissues, product.features, product.free_trial) == (None, (), False)


async def test_the_whmcs_secret_is_kept_replaced_or_cleared_and_the_next_answer_follows(client):
    _, key = await issue(client)
    browser = await admin(client)
    token = "1700000000abc"

    async def md5hash():
        _, body = await check(client, key, domain="shop.com", token=token)
        return sample_parse(body).get("md5hash")

    assert await md5hash() == hashlib.md5(b"s3cret" + token.encode()).hexdigest()
    await browser.post("/admin/products/mymod", {"csrf": browser.csrf, **FORM})  # keep
    assert await md5hash() == hashlib.md5(b"s3cret" + token.encode()).hexdigest()
    response, _ = await browser.post("/admin/products/mymod", {
        "csrf": browser.csrf, **FORM, "whmcs_action": "set", "whmcs_secret": "n3w-secret",
    })  # fmt: skip
    assert response.status == 303
    assert await md5hash() == hashlib.md5(b"n3w-secret" + token.encode()).hexdigest()
    row = (await audit_rows(client))[0]
    assert row["detail"] == {"before": {"whmcs_secret": "set"},
                             "after": {"whmcs_secret": "set (new)"}}  # fmt: skip
    assert "n3w-secret" not in repr(await audit_rows(client))
    response, _ = await browser.post("/admin/products/mymod", {
        "csrf": browser.csrf, **FORM, "whmcs_action": "clear",
    })  # fmt: skip
    assert response.status == 303
    assert await md5hash() is None  # no secret: the answer carries no md5hash
    assert (await stored(client))["whmcs_secret"] is None


async def test_an_unchanged_form_writes_nothing(client):
    await issue(client)
    browser = await admin(client)
    before = await unchanged(client)
    response, _ = await browser.post("/admin/products/mymod", {"csrf": browser.csrf, **FORM})
    assert response.status == 303
    assert await unchanged(client) == before


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seats": "-1"}, "seats:"),
        ({"seats": "0"}, "seats:"),
        ({"seats": "100001"}, "seats:"),
        ({"seats": "9" * 50}, "seats:"),
        ({"seats": "many"}, "seats:"),
        ({"seats": ""}, "seats:"),
        ({"local_key_days": "366"}, "local_key_days:"),
        ({"grace_days": "-5"}, "grace_days:"),
        ({"dev_host_allowance": "1001"}, "dev_host_allowance:"),
        ({"max_reissues": "-1"}, "max_reissues:"),
        ({"max_reissues": "1e3"}, "max_reissues:"),
        ({"name": "   "}, "name:"),
        ({"name": "<script>x</script>\x07"}, "name:"),
        ({"name": "n" * 201}, "name:"),
        ({"features": "ok\n\x00bad"}, "features"),
        ({"free_trial": "maybe"}, "free_trial:"),
        ({"whmcs_action": "reveal"}, "whmcs_secret: choose"),
        ({"whmcs_action": "set"}, "whmcs_secret: type the new secret"),
        ({"whmcs_action": "keep", "whmcs_secret": "typed-s3cret"}, "Set a new secret"),
        ({"whmcs_action": "clear", "whmcs_secret": "typed-s3cret"}, "Set a new secret"),
        ({"whmcs_action": "set", "whmcs_secret": "x" * 256}, "whmcs_secret:"),
        ({"max_reissues": None}, "form: incomplete"),  # a field missing is never "clear it"
        ({"features": None}, "form: incomplete"),
    ],
)
async def test_bad_edits_are_a_400_page_naming_the_problem_and_write_nothing(
    client, change, problem
):
    await issue(client)
    browser = await admin(client)
    before = await unchanged(client)
    form = {"csrf": browser.csrf, **FORM, **change}
    form = {name: value for name, value in form.items() if value is not None}
    response, page = await browser.post("/admin/products/mymod", form)
    assert response.status == 400, page
    assert problem in page and "<script>x" not in page and "typed-s3cret" not in page
    assert await unchanged(client) == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"csrf=csrf-admin&name=A&name=B", 400),  # repeated field
        (b"csrf=csrf-admin&name=%ff%fe", 400),  # not UTF-8 (percent-encoded)
        (b"csrf=csrf-admin&name=\xff\xfe", 400),  # not UTF-8 (raw)
        (b"csrf=csrf-admin&features=" + b"a" * 20_000, 413),  # oversize
        (b"name=A&seats=1", 403),  # no CSRF token
    ],
)
@pytest.mark.parametrize("path", ["/admin/products/mymod", "/admin/products"])
async def test_hostile_bodies_are_refused_before_anything_is_written(client, body, status, path):
    await issue(client)
    browser = await admin(client)
    before = await unchanged(client)
    response, page = await browser.post(
        path, body, **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == status, page
    assert response.content_type == "text/html"
    assert await unchanged(client) == before


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_each_role_sees_the_form_only_with_product_update(client, role):
    await issue(client)
    browser = await admin(client, role)
    _, page = await browser.get("/admin/products/mymod")
    may = rbac.has_permission(role, "product:update")
    assert ('action="/admin/products/mymod"' in page) == may
    before = await unchanged(client)
    response, _ = await browser.post(
        "/admin/products/mymod", {"csrf": browser.csrf, **FORM, "name": "Renamed"}
    )
    assert response.status == (303 if may else 403)
    if not may:
        assert await unchanged(client) == before

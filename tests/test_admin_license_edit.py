"""A license's changes in the admin (issue #12): extend, edit rules, reset reissues, release a
binding. Each takes effect at the very next verification (checked through the real
/api/v1/verify right after the admin's POST), is audited with before/after values, is refused
to the roles without its permission (route and service), and refuses hostile forms with a 400
page that names the problem, with nothing written."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI
from license_server.licensing.lifecycle import Action, TransitionRefused
from license_server.licensing.specs import LicenseTerms, ProductSpec
from license_server.staff import rbac
from license_server.web.admin import STAFF
from license_server.web.admin.base import EDITING
from tests.test_admin_licenses import issue, staff_session
from tests.verify_helpers import nonce

NEXT_YEAR = dt.date.today().year + 1


async def verify(client, key: str, domain: str = "shop.example.com", **fields) -> dict:
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": domain, "nonce": nonce(), **fields}
    )
    assert response.status == 200
    return await response.json()


async def audit_rows(client, limit: int = 50) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        rows = await staff_rows.audit_page(conn, None, limit)
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


async def state(client, license_id: int):
    """Everything that must not move when a form is refused: the license and the audit log."""
    runtime = client.app[RUNTIME]
    license = await runtime.licenses.license_by_id(license_id)
    return license, len(await audit_rows(client, 10_000))


async def post(browser, license_id: int, route: str, **form):
    role = browser.role
    return await browser.post(f"/admin/licenses/{license_id}/{route}", {"csrf": f"csrf-{role}",
                                                                          **form})  # fmt: skip


async def session(client, role: str):
    browser = await staff_session(client, role)
    browser.role = role
    return browser


# -- each action, seen by the next check -------------------------------------------------------


async def test_extend_sets_a_new_expiry_or_none_seen_at_the_next_check(client):
    license_id, key = await issue(client, expires=dt.date(NEXT_YEAR, 1, 31))
    answer = await verify(client, key)
    assert answer["status"] == "active"
    assert answer["license"]["expires_at"] == f"{NEXT_YEAR}-02-01T00:00:00Z"
    browser = await session(client, "license_manager")
    response, _ = await post(browser, license_id, "edit/expiry", expires=f"{NEXT_YEAR + 2}-06-30")
    assert response.status == 303
    answer = await verify(client, key)
    assert answer["license"]["expires_at"] == f"{NEXT_YEAR + 2}-07-01T00:00:00Z"
    response, _ = await post(browser, license_id, "edit/expiry", no_expiry="on")
    assert response.status == 303
    assert (await verify(client, key))["license"]["expires_at"] is None
    newest = (await audit_rows(client))[0]
    assert (newest["action"], newest["target"], newest["actor_kind"]) == (
        "license.renew",
        f"license:{license_id}",
        "staff",
    )
    assert newest["detail"]["before"]["expires_at"] is not None
    assert newest["detail"]["after"] == {"expires_at": None}


async def test_an_expired_license_renewed_in_the_admin_answers_active_at_once(client):
    license_id, key = await issue(client)
    await verify(client, key)  # bound and active
    await client.app[RUNTIME].licenses.apply(license_id, Action.EXPIRE, actor=CLI)
    assert (await verify(client, key))["status"] == "expired"
    browser = await session(client, "admin")
    response, _ = await post(browser, license_id, "edit/expiry", expires=f"{NEXT_YEAR}-12-31")
    assert response.status == 303
    answer = await verify(client, key)
    assert answer["status"] == "active" and answer["license"]["expires_at"].startswith(
        f"{NEXT_YEAR + 1}-01-01"
    )
    row = (await audit_rows(client))[0]
    assert row["detail"]["before"]["status"] == "expired"
    assert row["detail"]["after"]["status"] == "active"


async def test_a_suspended_license_is_not_renewed_409_and_nothing_written(client):
    license_id, _ = await issue(client)
    await client.app[RUNTIME].licenses.apply(license_id, Action.SUSPEND, actor=CLI)
    before = await state(client, license_id)
    browser = await session(client, "admin")
    response, page = await post(browser, license_id, "edit/expiry", expires=f"{NEXT_YEAR}-12-31")
    assert response.status == 409 and "cannot renew a license that is suspended" in page
    assert await state(client, license_id) == before


async def test_edit_rules_changes_seats_licensee_and_allow_rules_at_the_next_check(client):
    license_id, key = await issue(client, seats=1)
    assert (await verify(client, key))["status"] == "active"  # binds shop.example.com
    refused = await verify(client, key, domain="other.example.com")
    assert (refused["status"], refused["reason"]) == ("invalid", "seat_limit")
    browser = await session(client, "license_manager")
    _, page = await browser.get(f"/admin/licenses/{license_id}")
    assert 'name="licensee"' in page and "Smith &amp; Sons" in page
    response, _ = await post(
        browser, license_id, "edit/rules", licensee="Jones <Ltd>", company="J & J", seats="2",
        notes="moved to a new host", domains="", ips="", directories="",
    )  # fmt: skip
    assert response.status == 303
    answer = await verify(client, key, domain="other.example.com")
    assert (answer["status"], answer["reason"]) == ("active", "activated")
    assert answer["license"]["licensee"] == "Jones <Ltd>"
    assert answer["license"]["seats"] == 2
    row = (await audit_rows(client))[0]
    assert row["action"] == "license.edit"
    assert row["detail"]["before"] == {"licensee": "Smith & Sons", "company": "", "seats": 1,
                                       "notes": ""}  # fmt: skip
    assert row["detail"]["after"] == {"licensee": "Jones <Ltd>", "company": "J & J", "seats": 2,
                                      "notes": "moved to a new host"}  # fmt: skip
    # Allow-rules: only *.example.org now; the bound .com sites are refused at their next check.
    response, _ = await post(
        browser, license_id, "edit/rules", licensee="Jones <Ltd>", company="J & J", seats="2",
        notes="", domains="*.Example.ORG\nshop.example.org", ips="203.0.113.0/24",
        directories="/var/www/shop",
    )  # fmt: skip
    assert response.status == 303
    answer = await verify(client, key)
    assert (answer["status"], answer["reason"]) == ("invalid", "domain_not_allowed")
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    assert license.rules_of("domain") == ("*.example.org", "shop.example.org")
    assert license.rules_of("ip") == ("203.0.113.0/24",)
    row = (await audit_rows(client))[0]
    assert row["detail"]["before"]["rules"] == []
    assert row["detail"]["after"]["rules"] == [
        "directory /var/www/shop", "domain *.example.org", "domain shop.example.org",
        "ip 203.0.113.0/24",
    ]  # fmt: skip


async def test_an_unchanged_rules_form_keeps_following_the_products_seats(client):
    runtime = client.app[RUNTIME]
    license_id, _ = await issue(client)  # seats: the product's (2)
    browser = await session(client, "admin")
    response, _ = await post(browser, license_id, "edit/rules", licensee="Smith & Sons",
                             company="", seats="2", notes="a note", domains="", ips="",
                             directories="")  # fmt: skip
    assert response.status == 303
    async with runtime.db.read() as conn:
        from license_server.db.licenses import license_by_id

        assert (await license_by_id(conn, license_id))["seats"] is None
    row = (await audit_rows(client))[0]
    assert row["detail"] == {"before": {"notes": ""}, "after": {"notes": "a note"}}


async def test_reset_reissues_lets_a_capped_license_be_reissued_again(client):
    runtime = client.app[RUNTIME]
    await runtime.licenses.create_product(ProductSpec(code="capped", name="Capped", max_reissues=1))
    license, key = await runtime.licenses.issue(_spec(product="capped"), actor=CLI)
    await verify(client, key)
    await runtime.licenses.apply(license.id, Action.REISSUE, actor=CLI)
    await verify(client, key, domain="second.example.com")
    with pytest.raises(TransitionRefused):
        await runtime.licenses.apply(license.id, Action.REISSUE, actor=CLI)
    support = await session(client, "support")  # support may reissue, so may reset
    _, page = await support.get(f"/admin/licenses/{license.id}")
    assert "Reset the reissue count" in page
    response, _ = await post(support, license.id, "edit/reissues")
    assert response.status == 303
    response, _ = await post(support, license.id, "reissue")
    assert response.status == 303
    answer = await verify(client, key, domain="third.example.com")
    assert (answer["status"], answer["license"]["domains"]) == ("active", ["third.example.com"])
    reset = next(r for r in await audit_rows(client) if r["action"] == "license.reset_reissues")
    assert reset["detail"] == {"before": {"reissue_count": 1}, "after": {"reissue_count": 0}}


async def test_release_one_binding_frees_its_seat_for_the_next_check(client):
    license_id, key = await issue(client, seats=1)
    await verify(client, key)
    assert (await verify(client, key, domain="new.example.com"))["reason"] == "seat_limit"
    support = await session(client, "support")
    _, page = await support.get(f"/admin/licenses/{license_id}")
    assert "Release<span" in page
    response, _ = await post(support, license_id, "bindings/release", kind="domain",
                             value="shop.example.com")  # fmt: skip
    assert response.status == 303
    answer = await verify(client, key, domain="new.example.com")
    assert (answer["status"], answer["license"]["domains"]) == ("active", ["new.example.com"])
    row = next(r for r in await audit_rows(client) if r["action"] == "license.release")
    assert row["detail"]["before"]["binding"] == "domain shop.example.com"
    assert row["detail"]["after"] == {"binding": None}
    # Released already (a second tab): a page that says so, nothing written.
    before = await state(client, license_id)
    response, page = await post(support, license_id, "bindings/release", kind="domain",
                                value="shop.example.com")  # fmt: skip
    assert response.status == 404 and "holds no domain binding" in page
    assert await state(client, license_id) == before


async def test_an_ip_binding_of_a_whmcs_check_can_be_released(client):
    from tests.test_whmcs import check, sample_parse

    license_id, key = await issue(client)
    _, body = await check(client, key, domain="shop.com", ip="1.2.3.4")
    assert sample_parse(body)["status"] == "Active"
    _, body = await check(client, key, domain="shop.com", ip="5.6.7.8")
    assert sample_parse(body)["message"] == "IP Address Invalid"
    browser = await session(client, "admin")
    response, _ = await post(browser, license_id, "bindings/release", kind="ip", value="1.2.3.4")
    assert response.status == 303
    _, body = await check(client, key, domain="shop.com", ip="5.6.7.8")
    assert sample_parse(body)["status"] == "Active"
    assert sample_parse(body)["validip"] == "5.6.7.8"


def _spec(**overrides):
    from license_server.licensing.specs import LicenseSpec

    values = {"product": "mymod", "licensee": "Smith & Sons", "email": "ops@smith.example"}
    return LicenseSpec(**{**values, **overrides})


# -- roles: the page shows what the role may do; the route and the service refuse the rest ----


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_the_page_offers_each_role_only_its_own_forms(client, role):
    license_id, key = await issue(client)
    await verify(client, key)
    await client.app[RUNTIME].licenses.apply(license_id, Action.REISSUE, actor=CLI)
    await verify(client, key)
    browser = await session(client, role)
    _, page = await browser.get(f"/admin/licenses/{license_id}")
    may = lambda permission: rbac.has_permission(role, permission)  # noqa: E731
    assert ("/edit/expiry" in page) == may("license:update")
    assert ("/edit/rules" in page) == may("license:update")
    assert ("/edit/reissues" in page) == may("license:reissue")
    assert ("/bindings/release" in page) == may("binding:release")


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_the_service_checks_again_without_the_route(client, role):
    license_id, _ = await issue(client)
    browser = await session(client, role)
    staff = await client.app[STAFF].session(browser.cookie)
    editing = client.app[EDITING]
    calls = [
        ("license:update", editing.renew(staff, license_id, None)),
        ("license:update", editing.edit_terms(staff, license_id, LicenseTerms(licensee="X"))),
        ("license:reissue", editing.reset_reissues(staff, license_id)),
        ("binding:release", editing.release_binding(staff, license_id, "domain", "a.example")),
        ("product:update", editing.update_product(staff, "mymod", _no_change())),
    ]
    for permission, call in calls:
        if rbac.has_permission(role, permission):
            call.close()  # not awaited: only the refusals are under test here
            continue
        with pytest.raises(rbac.PermissionDenied):
            await call


def _no_change():
    from license_server.licensing.specs import ProductChanges

    return ProductChanges(name="My Module")


# -- hostile forms: a 400 page naming the problem, nothing written -----------------------------

RULES = {"licensee": "A", "company": "", "seats": "", "notes": "", "domains": "", "ips": "",
         "directories": ""}  # fmt: skip


@pytest.mark.parametrize(
    ("route", "form", "problem"),
    [
        ("edit/expiry", {}, "expires: give the new last day"),
        ("edit/expiry", {"expires": "31/12/2027"}, "expires: not a date"),
        ("edit/expiry", {"expires": "2027-02-30"}, "expires: not a date"),
        ("edit/expiry", {"expires": "<script>"}, "expires: not a date"),
        ("edit/expiry", {"expires": "2001-01-01"}, "must not be in the past"),
        ("edit/expiry", {"expires": "9999-12-31"}, "too far ahead"),
        ("edit/expiry", {"expires": f"{NEXT_YEAR}-01-01", "no_expiry": "on"}, "not both"),
        ("edit/rules", {**RULES, "seats": "-1"}, "seats:"),
        ("edit/rules", {**RULES, "seats": "0"}, "seats:"),
        ("edit/rules", {**RULES, "seats": "100001"}, "seats:"),
        ("edit/rules", {**RULES, "seats": "9" * 40}, "seats:"),
        ("edit/rules", {**RULES, "seats": "many"}, "seats:"),
        ("edit/rules", {**RULES, "seats": "1.5"}, "seats:"),
        ("edit/rules", {**RULES, "licensee": "   "}, "licensee:"),
        ("edit/rules", {**RULES, "licensee": "A\x00B"}, "licensee:"),
        ("edit/rules", {**RULES, "licensee": "x" * 201}, "licensee:"),
        ("edit/rules", {**RULES, "notes": "x" * 5001}, "notes:"),
        ("edit/rules", {**RULES, "domains": "exa mple.com"}, "domains"),
        ("edit/rules", {**RULES, "domains": "<script>.com"}, "domains"),
        ("edit/rules", {**RULES, "ips": "999.1.1.1"}, "ips"),
        ("edit/rules", {**RULES, "directories": "/var/www/" + "d" * 5000}, "directories"),
        ("edit/rules", {"licensee": "A"}, "form: incomplete"),  # never read as "clear all"
        ("bindings/release", {"kind": "bogus", "value": "x"}, "binding:"),
        ("bindings/release", {"kind": "domain"}, "binding:"),
        ("bindings/release", {"kind": "domain", "value": "x" * 1001}, "binding:"),
    ],
)
async def test_bad_forms_are_a_400_page_naming_the_problem_and_write_nothing(
    client, route, form, problem
):
    license_id, key = await issue(client, domains=("shop.example.com",))
    await verify(client, key)
    before = await state(client, license_id)
    browser = await session(client, "admin")
    response, page = await post(browser, license_id, route, **form)
    assert response.status == 400, page
    assert problem in page and "<script>" not in page
    assert await state(client, license_id) == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"csrf=csrf-admin&expires=2031-01-01&expires=2032-01-01", 400),  # repeated field
        (b"csrf=csrf-admin&expires=%ff%fe", 400),  # not UTF-8 (percent-encoded)
        (b"csrf=csrf-admin&expires=\xff\xfe", 400),  # not UTF-8 (raw)
        (b"csrf=csrf-admin&notes=" + b"a" * 20_000, 413),  # oversize
        (b"expires=2031-01-01", 403),  # no CSRF token
    ],
)
@pytest.mark.parametrize(
    "route", ["edit/expiry", "edit/rules", "edit/reissues", "bindings/release"]
)
async def test_hostile_bodies_are_refused_before_anything_is_written(client, body, status, route):
    license_id, key = await issue(client)
    await verify(client, key)
    await client.app[RUNTIME].licenses.apply(license_id, Action.REISSUE, actor=CLI)
    before = await state(client, license_id)
    browser = await session(client, "admin")
    response, page = await browser.post(
        f"/admin/licenses/{license_id}/{route}", body,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status == status, page
    assert response.content_type == "text/html"
    assert await state(client, license_id) == before


async def test_a_license_that_does_not_exist_is_a_404(client):
    await issue(client)
    browser = await session(client, "admin")
    release = {"kind": "domain", "value": "a.example"}
    for route, form in (("edit/expiry", {"no_expiry": "on"}), ("edit/rules", RULES),
                        ("edit/reissues", {}), ("bindings/release", release)):  # fmt: skip
        response, _ = await post(browser, 123456789, route, **form)
        assert response.status == 404, route

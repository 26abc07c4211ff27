"""The customer page /activate (issue #14): every path over HTTP, hostile input, both stores.

A `Customer` is just enough of a browser: the `__Host-portal` cookie by hand (the test client's
jar keeps no Secure cookie over http), Origin on every POST, the form's CSRF token read from
the last page. Time moves by the service's clock (`clock`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import re
from http.cookies import SimpleCookie

import jwt
import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.specs import LicenseSpec, ProductChanges, ProductSpec
from license_server.licensing.verifier import license_key_hash
from license_server.web.portal.sessions import COOKIE, token_hash
from license_server.web.portal.views import NOT_ACCEPTED
from tests.conftest import with_sections
from tests.test_admin_license_edit import audit_rows, verify
from tests.test_cli import run  # noqa: F401 - the fixture running run.py

T0 = 1_900_000_000  # 2030-03-17 17:46:40 UTC


class Customer:
    def __init__(self, client) -> None:
        self.client = client
        self.cookie = ""
        self.origin = str(client.make_url("")).rstrip("/")
        self.csrf = ""
        self.page = ""

    def _remember(self, response, text: str) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            jar = SimpleCookie(header)
            if COOKIE in jar:
                self.cookie = jar[COOKIE].value
        found = re.search(r'name="csrf" value="([^"]*)"', text)
        if found:
            self.csrf = found.group(1)
        self.page = text

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}

    async def get(self, path: str = "/activate"):
        response = await self.client.get(path, headers=self._headers(), allow_redirects=False)
        text = await response.text()
        self._remember(response, text)
        return response, text

    async def post(self, path: str, data=None, *, origin: str | None = "", csrf=True, **headers):
        headers = {**self._headers(), **headers}
        if origin is not None:
            headers["Origin"] = origin or self.origin
        if isinstance(data, dict) or data is None:
            data = {**({"csrf": self.csrf} if csrf else {}), **(data or {})}
        response = await self.client.post(path, data=data, headers=headers, allow_redirects=False)
        text = await response.text()
        self._remember(response, text)
        return response, text

    async def sign_in(self, key: str):
        await self.get()
        response, text = await self.post("/activate", {"license_key": key})
        assert response.status == 303, text
        return await self.get()


@pytest.fixture
def clock(client):
    """The service's clock, settable: sessions, cooldowns and links all read it."""
    now = [T0]
    client.app[RUNTIME].licenses.clock = lambda: now[0]
    return now


async def issue(client, *, product: ProductSpec | None = None, **spec) -> tuple[int, str]:
    runtime = client.app[RUNTIME]
    product = product or ProductSpec(code="mymod", name="My Module", seats=2)
    try:
        await runtime.licenses.product(product.code)
    except Exception:
        await runtime.licenses.create_product(product)
    spec = {"licensee": "Smith & Sons", "email": "ops@smith.example", **spec}
    license, key = await runtime.licenses.issue(LicenseSpec(product=product.code, **spec))
    return license.id, key


async def portal_attempts(client) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        return await conn.fetch_all(
            "SELECT * FROM verification_attempts WHERE endpoint = 'portal' ORDER BY id"
        )


async def bound(client, license_id: int) -> list[str]:
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    return [b.value for b in license.bindings_of("domain")]


def error_text(page: str) -> str:
    found = re.search(r'<div class="error" role="alert">(.*?)</div>', page, re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip() if found else ""


# -- the page and the session -----------------------------------------------------------------


async def test_the_key_form_sets_a_strict_cookie_and_the_admin_headers(client):
    customer = Customer(client)
    response, page = await customer.get()
    assert response.status == 200 and "License key" in page
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert attribute in cookie
    assert "Domain" not in cookie and "expires" not in cookie.lower()
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script" not in page.lower()  # works without JavaScript: there is none
    assert response.headers["Cache-Control"] == "no-store"
    assert '<label for="license_key">' in page


async def test_a_customer_signs_in_and_sees_only_their_license(client, clock):
    license_id, key = await issue(client, notes="staff only: refund risk", company="S&S Ltd")
    other_id, _ = await issue(client, licensee="Someone Else")
    await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.get()
    seed = customer.cookie
    response, page = await customer.post("/activate", {"license_key": key})
    assert response.status == 303 and response.headers["Location"] == "/activate"
    assert customer.cookie != seed  # a new token once the key is accepted (V3.2.1)
    _, page = await customer.get()
    assert "My Module" in page and "shop.example.com" in page and "1 of 2 in use" in page
    assert "active" in page and "no expiry" in page
    assert key not in page and key not in response.headers.get("Set-Cookie", "")
    assert "refund risk" not in page and "Someone Else" not in page
    assert "ops@smith.example" not in page
    async with client.app[RUNTIME].db.read() as conn:
        row = await conn.fetch_one(
            "SELECT * FROM portal_sessions WHERE token_hash = ?", (token_hash(customer.cookie),)
        )
    assert row["license_id"] == license_id and row["lkh"] == license_key_hash(key)
    assert key not in str(row)
    [attempt] = await portal_attempts(client)
    assert (attempt["result"], attempt["reason"], attempt["license_id"]) == (
        "active", "signed_in", license_id)  # fmt: skip
    assert other_id != license_id


async def test_the_session_ends_when_idle_and_on_sign_out(client, clock):
    _, key = await issue(client)
    customer = Customer(client)
    await customer.sign_in(key)
    clock[0] += 29 * 60
    _, page = await customer.get()
    assert "Your license" in page
    clock[0] += 31 * 60  # idle 31 minutes (the page view at 29 minutes was the last)
    _, page = await customer.get()
    assert "Activate your license" in page and "Your license" not in page
    response, _ = await customer.post("/activate/domains", {"domain": "x.example.com"})
    assert response.status == 303 and response.headers["Location"] == "/activate?ended=1"
    _, page = await customer.get("/activate?ended=1")
    assert "Your session has ended" in page

    await customer.sign_in(key)
    old = customer.cookie
    response, _ = await customer.post("/activate/sign-out")
    assert response.status == 303 and customer.cookie != old
    async with client.app[RUNTIME].db.read() as conn:
        assert await conn.fetch_value("SELECT COUNT(*) FROM portal_sessions") == 0
    # The old cookie is worth nothing now.
    customer.cookie = old
    _, page = await customer.get()
    assert "Activate your license" in page


async def test_the_session_ends_after_its_maximum_age_however_busy(client, clock):
    _, key = await issue(client)
    customer = Customer(client)
    await customer.sign_in(key)
    for _ in range(8 * 3):  # a page view every 20 minutes for 8 hours
        clock[0] += 20 * 60
        await customer.get()
    assert "Activate your license" in customer.page


# -- actions ----------------------------------------------------------------------------------


async def test_activating_a_domain_normalises_it_uses_a_seat_and_is_audited(client, clock):
    license_id, key = await issue(client)
    customer = Customer(client)
    await customer.sign_in(key)
    response, page = await customer.post(
        "/activate/domains", {"domain": " https://WWW.Shop.Example.COM:8443/cart "}
    )
    assert response.status == 200, page
    assert "shop.example.com is now bound" in page
    assert await bound(client, license_id) == ["shop.example.com"]
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    assert license.status.value == "active"  # the first binding activates, as a first check
    answer = await verify(client, key, "shop.example.com")
    assert answer["status"] == "active" and answer["reason"] == "ok"
    rows = await audit_rows(client)
    assert {(r["action"], r["actor_kind"], r["actor_id"]) for r in rows[:2]} == {
        ("license.bind", "customer", str(license_id)),
        ("license.activate", "customer", str(license_id)),
    }
    attempts = await portal_attempts(client)
    assert (attempts[-1]["result"], attempts[-1]["reason"], attempts[-1]["domain"]) == (
        "active", "bound", "shop.example.com")  # fmt: skip
    # Again: nothing to write.
    _, page = await customer.post("/activate/domains", {"domain": "shop.example.com"})
    assert "bound to this license already" in page
    assert len(await audit_rows(client)) == len(rows)


async def test_seats_and_development_hosts_follow_the_first_check_rules(client, clock):
    license_id, key = await issue(client)  # two seats
    customer = Customer(client)
    await customer.sign_in(key)
    for domain in ("one.example.com", "two.example.com"):
        response, _ = await customer.post("/activate/domains", {"domain": domain})
        assert response.status == 200
    response, page = await customer.post("/activate/domains", {"domain": "three.example.com"})
    assert response.status == 409 and "All seats of this license are in use" in page
    # A local host and a staging host under a bound domain use no seat.
    for domain in ("localhost", "staging.one.example.com"):
        response, page = await customer.post("/activate/domains", {"domain": domain})
        assert response.status == 200 and "uses no seat" in page, page
    # A staging host of a foreign domain is a site like any other.
    response, page = await customer.post("/activate/domains", {"domain": "staging.pirate.com"})
    assert response.status == 409
    assert sorted(await bound(client, license_id)) == [
        "localhost", "one.example.com", "staging.one.example.com", "two.example.com"]  # fmt: skip
    attempts = await portal_attempts(client)
    assert ("invalid", "seat_limit") in {(a["result"], a["reason"]) for a in attempts}


async def test_allow_rules_and_bans_apply(client, clock):
    license_id, key = await issue(client, domains=("*.smith.example",))
    await client.app[RUNTIME].bans.ban("domain", "banned.smith.example")
    customer = Customer(client)
    await customer.sign_in(key)
    response, page = await customer.post("/activate/domains", {"domain": "elsewhere.com"})
    assert response.status == 409 and "may not be used on that domain" in page
    response, page = await customer.post("/activate/domains", {"domain": "banned.smith.example"})
    assert response.status == 409 and "cannot be activated" in page
    response, _ = await customer.post("/activate/domains", {"domain": "shop.smith.example"})
    assert response.status == 200
    assert await bound(client, license_id) == ["shop.smith.example"]


async def test_releasing_a_domain_frees_its_seat(client, clock):
    license_id, key = await issue(client)
    await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.sign_in(key)
    response, page = await customer.post("/activate/release", {"domain": "shop.example.com"})
    assert response.status == 200 and "shop.example.com is released" in page
    assert await bound(client, license_id) == []
    [row] = [r for r in await audit_rows(client) if r["action"] == "license.release"]
    assert (row["actor_kind"], row["actor_id"]) == ("customer", str(license_id))
    response, page = await customer.post("/activate/release", {"domain": "shop.example.com"})
    assert response.status == 409 and "not bound" in page
    # Another license's domain cannot be released from here.
    other_id, other_key = await issue(client)
    await verify(client, other_key, "other.example.com")
    response, _ = await customer.post("/activate/release", {"domain": "other.example.com"})
    assert response.status == 409 and await bound(client, other_id) == ["other.example.com"]


async def test_reissue_within_the_limit_and_the_cooldown_ending_at_an_exact_time(client, clock):
    product = ProductSpec(code="capped", name="Capped", seats=1, max_reissues=2,
                          reissue_cooldown_hours=24)  # fmt: skip
    license_id, key = await issue(client, product=product)
    await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.sign_in(key)
    assert "Reissues left: <strong>2</strong>" in customer.page
    response, page = await customer.post("/activate/reissue")
    assert response.status == 200 and "Your license is reissued" in page
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    assert (license.status.value, license.bindings, license.reissue_count) == ("pending", (), 1)
    assert license.last_reissued_at == T0
    # 23 hours later (signed in again: the session was idle): still cooling down.
    clock[0] += 23 * 3600
    await customer.sign_in(key)
    assert "You can reissue again from 2030-03-18 17:46 UTC" in customer.page
    response, page = await customer.post("/activate/reissue")
    assert response.status == 409
    assert error_text(page) == (
        "This license was reissued recently. You can reissue it again from 2030-03-18 17:46 UTC."
    )
    assert (await client.app[RUNTIME].licenses.license_by_id(license_id)).reissue_count == 1
    for minutes in (25, 25, 9):  # 23 h 59 min: not yet
        clock[0] += minutes * 60
        response, _ = await customer.post("/activate/reissue")
        assert response.status == 409
    clock[0] += 60  # 24 h to the second
    response, _ = await customer.post("/activate/reissue")
    assert response.status == 200
    clock[0] += 25 * 3600
    await customer.sign_in(key)
    response, page = await customer.post("/activate/reissue")
    assert response.status == 409 and "the most this product allows" in page
    reasons = [(a["result"], a["reason"]) for a in await portal_attempts(client)]
    assert reasons.count(("active", "reissued")) == 2
    assert ("invalid", "reissue_cooldown") in reasons and ("invalid", "reissue_limit") in reasons
    rows = [r for r in await audit_rows(client) if r["action"] == "license.reissue"]
    assert len(rows) == 2 and {r["actor_kind"] for r in rows} == {"customer"}


async def test_staff_reissues_are_not_held_by_the_cooldown(client, clock):
    product = ProductSpec(code="cool", name="Cool", reissue_cooldown_hours=24)
    license_id, _ = await issue(client, product=product)
    service = client.app[RUNTIME].licenses
    from license_server.licensing.lifecycle import Action, ReissueCooldown

    await service.customer_reissue(license_id, actor=service_actor(license_id))
    with pytest.raises(ReissueCooldown) as refused:
        await service.customer_reissue(license_id, actor=service_actor(license_id))
    assert refused.value.until == T0 + 24 * 3600
    license = await service.apply(license_id, Action.REISSUE)
    assert license.reissue_count == 2


def service_actor(license_id: int):
    from license_server.licensing.actors import customer_actor

    return customer_actor(license_id)


async def test_concurrent_activations_race_for_the_last_seat_one_wins(client, clock):
    license_id, key = await issue(client, seats=1)
    customers = [Customer(client) for _ in range(6)]
    for customer in customers:
        await customer.sign_in(key)
    answers = await asyncio.gather(*(
        customer.post("/activate/domains", {"domain": f"site{n}.example.com"})
        for n, customer in enumerate(customers)
    ))  # fmt: skip
    statuses = sorted(response.status for response, _ in answers)
    assert statuses == [200] + [409] * 5
    assert len(await bound(client, license_id)) == 1


# -- the local key ----------------------------------------------------------------------------


async def test_the_local_key_download_is_the_verifiers_signed_token(client, clock):
    license_id, key = await issue(client)
    answer = await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.sign_in(key)
    assert 'href="/activate/local-key?domain=shop.example.com"' in customer.page
    response = await client.get(
        "/activate/local-key?domain=shop.example.com", headers=customer._headers()
    )
    assert response.status == 200
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="license-mymod-shop.example.com.jwt"'
    )
    token = (await response.text()).strip()
    header = jwt.get_unverified_header(token)
    public = client.app[RUNTIME].keyring.get(header["kid"]).private_key.public_key()
    claims = jwt.decode(
        token, public, algorithms=["EdDSA"], audience="mymod", options={"verify_iat": False}
    )  # the test clock is in 2030
    online = jwt.decode(answer["local_key"], options={"verify_signature": False})
    assert claims["domain"] == "shop.example.com" and claims["sub"] == str(license_id)
    assert claims["lkh"] == license_key_hash(key) == online["lkh"]
    assert set(claims) == set(online)  # the same token a phone-home check hands out
    [row] = [a for a in await portal_attempts(client) if a["reason"] == "local_key"]
    assert row["domain"] == "shop.example.com"
    # Not for a domain that is not bound, nor without a session.
    response = await client.get(
        "/activate/local-key?domain=other.example.com", headers=customer._headers()
    )
    assert response.status == 409
    response = await client.get("/activate/local-key?domain=shop.example.com",
                                allow_redirects=False)  # fmt: skip
    assert response.status == 303


# -- keys that are not genuine ----------------------------------------------------------------


def _forged(key: str) -> str:
    """The same key with one character of its signature changed."""
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


async def test_keys_that_are_not_genuine_get_one_message_and_count_as_guesses(client, clock):
    _, key = await issue(client)
    customer = Customer(client)
    await customer.get()
    guesses = ["NOPE-1234", _forged(key), "X" * 1000, "MYMOD-ÄÖÜ", key.lower() + "Q",
               "MYMOD-" + "A" * 122, "\x00\x01", "legacy123", _forged(_forged(key)),
               "<script>alert(1)</script>"]  # fmt: skip
    pages = []
    for guess in guesses:
        response, page = await customer.post("/activate", {"license_key": guess})
        assert response.status == 400, guess
        pages.append(error_text(page))
        assert 'value="' + guess not in page and "alert(1)" not in page  # never echoed
    assert set(pages) == {NOT_ACCEPTED}
    # The eleventh try is refused before the key is looked at, genuine or not.
    response, page = await customer.post("/activate", {"license_key": key})
    assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    assert "Too many attempts" in page
    response, _ = await customer.get()
    assert response.status == 429
    attempts = await portal_attempts(client)
    assert [a["result"] for a in attempts].count("invalid") == 10
    assert {"unknown_key", "bad_signature", "malformed_key"} <= {a["reason"] for a in attempts}
    # The guesses spent verify's unknown-key budget of the address too.
    response = await client.post(
        "/api/v1/verify", json={"license_key": "NOPE-9999", "domain": "a.example.com",
                                "nonce": "n" * 20},
    )  # fmt: skip
    assert response.status == 429


async def test_the_guess_limit_is_a_setting_and_an_empty_key_is_no_guess(aiohttp_client, settings):
    client = await aiohttp_client(
        create_app(with_sections(settings, portal={"guesses_per_hour": 2}))
    )
    customer = Customer(client)
    await customer.get()
    for _ in range(5):
        response, page = await customer.post("/activate", {"license_key": "   "})
        assert response.status == 400 and "Enter your license key" in page
    for _ in range(2):
        response, _ = await customer.post("/activate", {"license_key": "NOPE"})
        assert response.status == 400
    response, _ = await customer.post("/activate", {"license_key": "NOPE"})
    assert response.status == 429


# -- hostile forms ----------------------------------------------------------------------------


async def _nothing_written(client, license_id):
    license = await client.app[RUNTIME].licenses.license_by_id(license_id)
    return license.bindings, license.reissue_count, len(await audit_rows(client, 10_000))


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        ({"csrf": False}, 403),
        ({"csrf_value": "0" * 64}, 403),
        ({"csrf_value": "é"}, 403),
        ({"origin": "https://evil.example"}, 403),
        ({"origin": "null"}, 403),
        ({"origin": None}, 403),  # no Origin and no Sec-Fetch-Site
        ({"body": "domain=a.example.com&domain=b.example.com"}, 400),
        ({"body": "domain=%ff%fe.example.com"}, 400),
        ({"body": "domain=" + "a" * 5000}, 413),
        ({"json": True}, 415),
        ({"domain": "a" * 301}, 400),
        ({"domain": "not a domain!"}, 400),
        ({"domain": "exa mple.com"}, 400),
        ({"domain": ""}, 400),
        ({"domain": "http://"}, 400),
    ],
)
async def test_hostile_forms_get_a_4xx_and_write_nothing(client, clock, tamper, status):
    license_id, key = await issue(client)
    customer = Customer(client)
    await customer.sign_in(key)
    before = await _nothing_written(client, license_id)
    headers = {"Cookie": f"{COOKIE}={customer.cookie}"}
    if tamper.get("origin", "") is not None:
        headers["Origin"] = tamper.get("origin") or customer.origin
    csrf = tamper.get("csrf_value", customer.csrf)
    if "body" in tamper:
        body = f"csrf={csrf}&{tamper['body']}"
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await client.post("/activate/domains", data=body, headers=headers,
                                     allow_redirects=False)  # fmt: skip
    elif tamper.get("json"):
        response = await client.post("/activate/domains", json={"csrf": csrf, "domain": "a.com"},
                                     headers=headers, allow_redirects=False)  # fmt: skip
    else:
        form = {"domain": tamper.get("domain", "a.example.com")}
        if tamper.get("csrf", True):
            form["csrf"] = csrf
        response = await client.post("/activate/domains", data=form, headers=headers,
                                     allow_redirects=False)  # fmt: skip
    assert response.status == status, await response.text()
    assert "text/html" in response.headers["Content-Type"]
    assert await _nothing_written(client, license_id) == before


async def test_a_key_entry_without_csrf_or_from_elsewhere_is_refused(client):
    _, key = await issue(client)
    customer = Customer(client)
    await customer.get()
    response, _ = await customer.post("/activate", {"license_key": key}, csrf=False)
    assert response.status == 403
    response, _ = await customer.post("/activate", {"license_key": key},
                                      origin="https://evil.example")  # fmt: skip
    assert response.status == 403
    customer.cookie = ""  # a token made for another cookie (or none) does not count
    response, _ = await customer.post("/activate", {"license_key": key})
    assert response.status == 403
    async with client.app[RUNTIME].db.read() as conn:
        assert await conn.fetch_value("SELECT COUNT(*) FROM portal_sessions") == 0


async def test_every_action_without_a_session_changes_nothing(client):
    license_id, key = await issue(client)
    await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.get()
    for path, form in (("/activate/domains", {"domain": "x.example.com"}),
                       ("/activate/release", {"domain": "shop.example.com"}),
                       ("/activate/reissue", {})):  # fmt: skip
        response, _ = await customer.post(path, form)
        assert response.status == 303 and response.headers["Location"] == "/activate?ended=1"
    assert await bound(client, license_id) == ["shop.example.com"]
    # A forged session cookie is no session either.
    customer.cookie = "A" * 43
    response, _ = await customer.post("/activate/reissue", {"csrf": customer.csrf})
    assert response.status in (303, 403)
    assert await bound(client, license_id) == ["shop.example.com"]


# -- the product setting ----------------------------------------------------------------------


async def test_the_cooldown_is_a_product_setting_in_the_service_and_the_api(client):
    runtime = client.app[RUNTIME]
    product = await runtime.licenses.create_product(ProductSpec(code="p1", name="P"))
    assert product.reissue_cooldown_hours == 0
    updated = await runtime.licenses.update_product("p1", ProductChanges(reissue_cooldown_hours=6))
    assert updated.reissue_cooldown_hours == 6
    [row] = [r for r in await audit_rows(client) if r["action"] == "license.product"
             and r["detail"].get("after", {}).get("reissue_cooldown_hours") == 6]  # fmt: skip
    assert row["detail"]["before"]["reissue_cooldown_hours"] == 0
    from tests.api_helpers import api, make_key

    _, headers = await make_key(client)
    response, body = await api(client, "PATCH", "/api/v1/products/p1", headers,
                               {"reissue_cooldown_hours": 48})  # fmt: skip
    assert response.status == 200 and body["reissue_cooldown_hours"] == 48
    response, body = await api(client, "PATCH", "/api/v1/products/p1", headers,
                               {"reissue_cooldown_hours": -1})  # fmt: skip
    assert response.status == 400
    response, body = await api(client, "GET", "/api/v1/products/p1", headers)
    assert body["reissue_cooldown_hours"] == 48


async def test_the_cooldown_in_the_admin_product_form(client):
    from tests.test_admin_products import FORM, admin

    browser = await admin(client)
    await client.app[RUNTIME].licenses.create_product(
        ProductSpec(code="mymod", name="My Module", seats=2)
    )
    _, page = await browser.get("/admin/products/mymod")
    assert 'id="reissue_cooldown_hours"' in page
    response, _ = await browser.post("/admin/products/mymod", {
        "csrf": browser.csrf, **FORM, "reissue_cooldown_hours": "12"})  # fmt: skip
    assert response.status == 303
    assert (await client.app[RUNTIME].licenses.product("mymod")).reissue_cooldown_hours == 12
    for bad in ("-1", "1.5", "99999999", "x"):
        response, page = await browser.post("/admin/products/mymod", {
            "csrf": browser.csrf, **FORM, "reissue_cooldown_hours": bad})  # fmt: skip
        assert response.status == 400 and "reissue_cooldown_hours" in page
    form = {name: value for name, value in FORM.items() if name != "reissue_cooldown_hours"}
    response, _ = await browser.post("/admin/products/mymod", {"csrf": browser.csrf, **form})
    assert response.status == 400  # a form without the field is never "no cooldown"
    assert (await client.app[RUNTIME].licenses.product("mymod")).reissue_cooldown_hours == 12


# -- e-mail confirmation (aiosmtpd on loopback) -----------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        from email import message_from_bytes
        from email.policy import default

        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 OK"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    inbox.port = controller.port
    try:
        yield inbox
    finally:
        controller.stop()


def _mail_settings(settings, port: int, **more):
    portal = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False,
              "smtp_from": "licenses@vendor.example",
              "public_url": "https://licenses.vendor.example", **more}  # fmt: skip
    return with_sections(settings, portal=portal)


@pytest.fixture
async def mail_client(aiohttp_client, settings, smtp):
    client = await aiohttp_client(create_app(_mail_settings(settings, smtp.port)))
    now = [T0]
    client.app[RUNTIME].licenses.clock = lambda: now[0]
    client.now = now
    return client


def _link(message) -> str:
    body = message.get_content()
    found = re.search(r"https://licenses\.vendor\.example(/activate/confirm/[A-Za-z0-9_%-]+)", body)
    return found.group(1)


async def test_a_release_waits_for_the_e_mailed_link(mail_client, smtp):
    client = mail_client
    license_id, key = await issue(client)
    await verify(client, key, "shop.example.com")
    customer = Customer(client)
    await customer.sign_in(key)
    assert "confirmed through a link we e-mail to o***@smith.example" in customer.page
    response, page = await customer.post("/activate/release", {"domain": "shop.example.com"})
    assert response.status == 200 and "We sent a link to o***@smith.example" in page
    assert await bound(client, license_id) == ["shop.example.com"]  # not yet
    [message] = smtp.messages
    assert message["To"] == "ops@smith.example"
    assert message["From"] == "licenses@vendor.example"
    assert "release the domain shop.example.com" in message.get_content()
    assert key not in message.get_content()
    link = _link(message)
    async with client.app[RUNTIME].db.read() as conn:
        rows = await conn.fetch_all("SELECT * FROM portal_confirmations")
    assert link.rsplit("/", 1)[1] not in str(rows)  # only its hash is stored

    # Opened in another browser (a mail client): GET shows a button and changes nothing.
    reader = Customer(client)
    response, page = await reader.get(link)
    assert response.status == 200 and "Release shop.example.com" in page
    await reader.get(link)  # mail scanners open links too
    assert await bound(client, license_id) == ["shop.example.com"]
    response, _ = await reader.post(link, csrf=False)
    assert response.status == 403
    response, _ = await reader.post(link, origin="https://evil.example")
    assert response.status == 403
    response, page = await reader.post(link)
    assert response.status == 200 and "shop.example.com is released" in page
    assert await bound(client, license_id) == []
    [row] = [r for r in await audit_rows(client) if r["action"] == "license.release"]
    assert (row["actor_kind"], row["actor_id"]) == ("customer", str(license_id))
    response, page = await reader.post(link)  # single use
    assert response.status == 404 and "cannot be used" in page
    response, _ = await reader.get(link)
    assert response.status == 404
    reasons = [a["reason"] for a in await portal_attempts(client)]
    assert "confirm_release_sent" in reasons and "released" in reasons


async def test_a_reissue_by_link_keeps_the_limit_and_the_link_expires(mail_client, smtp):
    client = mail_client
    product = ProductSpec(code="capped", name="Capped", max_reissues=1)
    license_id, key = await issue(client, product=product)
    customer = Customer(client)
    await customer.sign_in(key)
    await customer.post("/activate/reissue")
    await customer.post("/activate/reissue")  # two links for one remaining reissue
    first, second = (_link(message) for message in smtp.messages)
    reader = Customer(client)
    await reader.get(first)
    response, page = await reader.post(first)
    assert response.status == 200 and "reissued" in page
    await reader.get(second)
    response, page = await reader.post(second)
    assert response.status == 409 and "as often as this product allows" in page
    assert (await client.app[RUNTIME].licenses.license_by_id(license_id)).reissue_count == 1

    # A release link opened after 30 minutes does nothing.
    await verify(client, key, "shop.example.com")
    await customer.sign_in(key)
    await customer.post("/activate/release", {"domain": "shop.example.com"})
    late = _link(smtp.messages[-1])
    await reader.get(late)
    client.now[0] += 30 * 60
    response, _ = await reader.get(late)
    assert response.status == 404
    response, _ = await reader.post(late)
    assert response.status == 404
    assert await bound(client, license_id) == ["shop.example.com"]
    response, _ = await reader.get("/activate/confirm/" + "A" * 43)
    assert response.status == 404
    response, _ = await reader.get("/activate/confirm/" + "%C3%A9" * 60)
    assert response.status == 404


async def test_a_link_used_twice_at_once_acts_once(mail_client, smtp):
    client = mail_client
    license_id, key = await issue(client)
    customer = Customer(client)
    await customer.sign_in(key)
    await customer.post("/activate/reissue")
    link = _link(smtp.messages[-1])
    readers = [Customer(client) for _ in range(4)]
    for reader in readers:
        await reader.get(link)
    answers = await asyncio.gather(*(reader.post(link) for reader in readers))
    assert sorted(response.status for response, _ in answers) == [200, 404, 404, 404]
    assert (await client.app[RUNTIME].licenses.license_by_id(license_id)).reissue_count == 1


async def test_no_starttls_or_no_server_sends_nothing_and_changes_nothing(
    aiohttp_client, settings, smtp
):
    for portal in ({"smtp_starttls": True}, {"smtp_port": _free_port()}):
        app = create_app(_mail_settings(settings, smtp.port, **portal))
        client = await aiohttp_client(app)
        license_id, key = await issue(client)
        await verify(client, key, "shop.example.com")
        customer = Customer(client)
        await customer.sign_in(key)
        response, page = await customer.post("/activate/release", {"domain": "shop.example.com"})
        assert response.status == 503 and "could not be sent" in page
        assert await bound(client, license_id) == ["shop.example.com"]
        await client.close()
    assert smtp.messages == []


def test_mail_settings_need_a_sender_and_a_public_url_and_the_password_is_env_only(tmp_path):
    from license_server.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="smtp_from and public_url"):
        load_settings(None, {"LICENSE_SERVER_PORTAL_SMTP_HOST": "mail.example"})
    with pytest.raises(SettingsError, match="public_url"):
        load_settings(None, {"LICENSE_SERVER_PORTAL_PUBLIC_URL": "https://x.example/path"})
    file = tmp_path / "settings.toml"
    file.write_text('[portal]\nsmtp_password = "hunter2"\n')
    with pytest.raises(SettingsError, match="LICENSE_SERVER_PORTAL_SMTP_PASSWORD") as refused:
        load_settings(file, {})
    assert "hunter2" not in str(refused.value)
    loaded = load_settings(None, {"LICENSE_SERVER_PORTAL_SMTP_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(loaded.portal)


async def test_the_cooldown_from_the_command_line(run, tmp_path, database_url):  # noqa: F811
    from license_server.runtime import open_runtime
    from license_server.settings import Settings

    run("create-product", "--code", "c", "--name", "C", "--reissue-cooldown-hours", "5")
    run("update-product", "--code", "c", "--reissue-cooldown-hours", "7")
    failed = run("update-product", "--code", "c", "--reissue-cooldown-hours", "-1", check=False)
    assert failed.returncode != 0
    async with open_runtime(Settings(database=database_url, keys_dir=tmp_path / "keys")) as rt:
        assert (await rt.licenses.product("c")).reissue_cooldown_hours == 7

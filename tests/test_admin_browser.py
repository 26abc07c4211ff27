"""The staff admin in a real browser (issue #12): headless Chromium through Playwright, an axe
scan and screenshots of every page at 1280 and 360 px, keyboard only where it matters.

Plain `def` tests (tests/browser.py says why); the app runs in a thread of its own."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
import urllib.request

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from playwright.sync_api import expect

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec
from license_server.staff import totp
from license_server.web.admin import FIRST_RUN_TOKEN
from tests.browser import assert_accessible, each_width, live_server
from tests.conftest import PRODUCT

PASSWORD = "Correct-Horse-7-Battery"


def code_for(secret_text: str, at: float) -> str:
    secret = totp.secret_from_text(secret_text)
    return TOTP(secret, 6, SHA1(), 30, enforce_key_length=False).generate(int(at)).decode()


def verify(base_url: str, key: str) -> dict:
    """What an installed module would be told right now (its own HTTP client)."""
    body = urllib.parse.urlencode(
        {"license_key": key, "domain": "shop.example.com", "nonce": secrets.token_urlsafe(24)}
    ).encode()
    with urllib.request.urlopen(base_url + "/api/v1/verify", data=body, timeout=10) as r:
        return json.loads(r.read())


def look(page, screenshot, name: str) -> None:
    """Every page: a screenshot at each width and no serious accessibility violation."""
    for _ in each_width(page):
        screenshot(page, name)
        assert_accessible(page)


async def seed(runtime) -> int:
    await runtime.licenses.create_product(PRODUCT)
    license, _ = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="Smith & Sons", email="ops@smith.example"),
        actor=CLI,
    )
    return license.id


def test_a_new_administrator_sets_up_signs_in_and_manages_a_license(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        license_id = server.call(seed(app[RUNTIME]))
        page.goto(server.url + "/admin")
        expect(page.get_by_role("heading", name="No staff account yet")).to_be_visible()
        look(page, screenshot, "admin-no-staff")

        page.goto(f"{server.url}/admin/setup/{app[FIRST_RUN_TOKEN]}")
        look(page, screenshot, "admin-setup")
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Your name").fill("Ann Admin")
        page.get_by_label("Password", exact=True).fill("password1234")  # long enough, common
        page.get_by_label("Password again").fill("password1234")
        page.get_by_role("button", name="Create the account").click()
        expect(page.get_by_role("alert")).to_be_visible()  # the policy says what to change
        look(page, screenshot, "admin-setup-refused")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Create the account").click()
        expect(page.get_by_role("status")).to_contain_text("Your account is ready")
        look(page, screenshot, "admin-sign-in")

        # Keyboard only: the password field, then Enter submits.
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Email address").press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/admin/enrol")
        expect(page.locator(".qr svg")).to_be_visible()
        look(page, screenshot, "admin-enrol")
        secret = page.locator(".secret").inner_text()
        page.get_by_label("The 6-digit code the app shows").fill(code_for(secret, time.time()))
        page.get_by_role("button", name="Confirm").click()
        expect(page.locator("ol.codes li")).to_have_count(10)
        look(page, screenshot, "admin-recovery-codes")

        page.get_by_role("link", name=re.compile("go to the dashboard")).click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        look(page, screenshot, "admin-dashboard")
        page.get_by_role("link", name="Change your password").click()
        look(page, screenshot, "admin-password")

        # A product and a license made in the pages; the licensee's name is hostile markup.
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.get_by_role("navigation").get_by_role("link", name="Products").click()
        page.get_by_label("Code").fill("webshop")
        page.get_by_label("Name").fill("Web Shop Module")
        page.get_by_label("Seats").fill("1")
        page.get_by_role("button", name="Create the product").click()
        expect(page.get_by_role("cell", name="Web Shop Module")).to_be_visible()
        look(page, screenshot, "admin-products")
        page.goto(server.url + "/admin/licenses/new")
        look(page, screenshot, "admin-license-new")
        page.get_by_label("Product").select_option("webshop")
        page.get_by_label("Licensee").fill("<script>alert(1)</script>")
        page.get_by_label("Email address").fill("buyer@example.org")
        page.get_by_role("button", name="Issue").click()
        new_key = page.locator(".secret").inner_text()
        assert new_key.startswith("WEBSHOP-")
        expect(page.get_by_text("<script>alert(1)</script>")).to_be_visible()  # text, not code
        page.get_by_role("button", name="Suspend").click()
        answer = verify(server.url, new_key)
        assert (answer["status"], answer["reason"]) == ("suspended", "suspended")  # at once
        assert dialogs == []

        page.get_by_role("navigation").get_by_role("link", name="Licenses").click()
        look(page, screenshot, "admin-licenses")
        page.get_by_role("link", name=str(license_id)).click()
        look(page, screenshot, "admin-license")
        page.get_by_role("button", name="Suspend").click()
        expect(page.locator(".stats").first).to_contain_text("suspended")
        page.get_by_role("button", name="Show the key").click()
        expect(page.locator(".secret")).to_contain_text("MYMOD-")

        page.get_by_role("navigation").get_by_role("link", name="Staff").click()
        page.get_by_label("Role").select_option("support")
        page.get_by_role("button", name="Make a one-time link").click()
        expect(page.locator(".notice .secret")).to_contain_text("/admin/setup/")
        look(page, screenshot, "admin-staff")

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/admin/login")
        page.goto(server.url + "/admin/licenses")
        page.wait_for_url("**/admin/login")  # signed out for real

        # Back with the password and a code: the next step's code (the enrolment spent this
        # step's; the window accepts one step either side).
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url("**/admin/mfa")
        look(page, screenshot, "admin-mfa")
        page.get_by_label(re.compile("6-digit code")).fill(code_for(secret, time.time() + 30))
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_the_session_cookie_works_on_localhost_too(page, screenshot, settings):
    """__Host- and Secure over plain http: browsers treat localhost as a secure context."""
    app = create_app(settings)
    with live_server(app) as server:
        local = server.url.replace("127.0.0.1", "localhost")
        page.goto(f"{local}/admin/setup/{app[FIRST_RUN_TOKEN]}")
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Your name").fill("Ann")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Create the account").click()
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url("**/admin/enrol")  # the session cookie came back
        cookies = page.context.cookies()
        assert [c["name"] for c in cookies] == ["__Host-staff-session"]
        assert cookies[0]["secure"] and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Lax"

        # Six wrong sign-ins from this address: the sixth is the throttle's page.
        for n in range(6):
            page.goto(f"{local}/admin/login")
            page.get_by_label("Email address").fill(f"nobody{n}@example.org")
            page.get_by_label("Password", exact=True).fill("Wrong-Horse-7-Battery")
            page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("heading", name="Too many attempts")).to_be_visible()
        look(page, screenshot, "admin-too-many")


def _sign_in_as_first_admin(page, server, app) -> None:
    """Through the pages: the set-up link, the password, the authenticator."""
    page.goto(f"{server.url}/admin/setup/{app[FIRST_RUN_TOKEN]}")
    page.get_by_label("Email address").fill("ann@example.org")
    page.get_by_label("Your name").fill("Ann Admin")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.get_by_label("Email address").fill("ann@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/admin/enrol")
    secret = page.locator(".secret").inner_text()
    page.get_by_label("The 6-digit code the app shows").fill(code_for(secret, time.time()))
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("ol.codes li")).to_have_count(10)


def test_api_keys_page_and_the_api_reference(page, screenshot, settings):
    """The API keys page (issue #13): make a key by keyboard and mouse, see it once, revoke it;
    and the API reference page at /api/docs."""
    app = create_app(settings)
    with live_server(app) as server:
        _sign_in_as_first_admin(page, server, app)
        page.goto(server.url + "/admin/api-keys")
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        look(page, screenshot, "admin-api-keys-empty")
        page.get_by_label("Name (what uses it").fill("WHMCS billing")
        page.get_by_label("license:*").check()
        page.get_by_label("product:read", exact=True).check()
        page.get_by_role("button", name="Make the key").click()
        secret = page.locator(".notice .secret").inner_text()
        assert secret.startswith("lsk_live_")
        look(page, screenshot, "admin-api-keys-created")
        request = urllib.request.Request(
            server.url + "/api/v1/licenses", headers={"Authorization": f"Bearer {secret}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["items"] == []
        page.goto(server.url + "/admin/api-keys")
        assert secret not in page.content()
        page.get_by_role("button", name=re.compile("^Revoke")).click()
        expect(page.get_by_role("cell", name="revoked")).to_be_visible()
        look(page, screenshot, "admin-api-keys")

        page.goto(server.url + "/api/docs")
        expect(page.get_by_role("heading", name=re.compile("vendor API"))).to_be_visible()
        look(page, screenshot, "api-docs")

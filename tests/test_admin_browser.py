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


async def seed_attempts_page(runtime) -> tuple[int, str]:
    """A license, a few logged checks (one with a hostile User-Agent and domain) and a staff
    session for a license manager; returns (license id, session id)."""
    from license_server.db import attempts as attempt_rows
    from license_server.db import staff as staff_rows
    from license_server.licensing.attempt_log import Attempt
    from license_server.staff import sessions

    license_id = await seed(runtime)
    now_ms = int(time.time() * 1000)
    rows = [
        Attempt(now_ms - n * 61_000, "native", f"203.0.113.{n}", "", "shop.example.com",
                "shop.example.com", "/var/www/shop", license_id, None, "mymod",
                "active" if n % 3 else "invalid", "ok" if n % 3 else "domain_not_allowed",
                "2.1.0", "WHMCS/8.10 PHP/8.2 " + "x" * 80, 900).row()
        for n in range(1, 8)
    ]  # fmt: skip
    rows.append(
        Attempt(now_ms, "whmcs", "198.51.100.66", "", "<script>alert(1)</script>",
                "", "", None, None, "", "invalid", "unknown_key", "",
                "<script>alert(2)</script>", 500).row()
    )  # fmt: skip
    session_id = sessions.new_session_id()
    async with runtime.db.write() as conn:
        await conn.execute_many(attempt_rows.INSERT, rows)
        account = await staff_rows.insert_account(
            conn, email="lm@example.org", name="Lee Manager", role="license_manager",
            password_hash="x", now=1,
        )  # fmt: skip
        await staff_rows.set_totp(conn, account, b"enrolled", 1)
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account,
            csrf_token="csrf-browser", mfa_passed=True, now=runtime.licenses.now(),
        )  # fmt: skip
    return license_id, session_id


def test_the_attempt_log_and_the_bans_pages(page, screenshot, settings):
    """Filter the log, follow a "ban this IP" shortcut, ban it, see it listed, lift it; hostile
    logged values stay text; axe and screenshots of both pages at both widths."""
    app = create_app(settings)
    with live_server(app) as server:
        _, session_id = server.call(seed_attempts_page(app[RUNTIME]))
        # The session made in the database, handed to the browser as a script would set it
        # (through DevTools, which the page's CSP does not govern; 127.0.0.1 is a secure
        # context, so the __Host- cookie is accepted over http).
        page.goto(server.url + "/admin/login")
        page.evaluate(
            "id => { document.cookie = "
            "`__Host-staff-session=${id}; Path=/; Secure; SameSite=Lax`; }",
            session_id,
        )
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(server.url + "/admin")
        page.get_by_role("navigation").get_by_role("link", name="Attempts").click()
        expect(page.get_by_role("heading", name="Attempt log")).to_be_visible()
        expect(page.get_by_text("<script>alert(1)</script>")).to_be_visible()  # text, not code
        look(page, screenshot, "admin-attempts")

        page.get_by_label("Result").select_option("invalid")
        page.get_by_label("Source IP or IPv4 range").fill("203.0.113.0/24")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table.log tbody tr")).to_have_count(2)  # n = 3 and 6
        look(page, screenshot, "admin-attempts-filtered")
        page.goto(server.url + "/admin/attempts?from=2026-13-01T00:00")
        expect(page.get_by_role("heading", name="Bad filter")).to_be_visible()

        page.goto(server.url + "/admin/attempts?result=invalid&ip=203.0.113.3")
        page.get_by_role("link", name="ban this IP…").click()
        expect(page.get_by_label("Domain, IP address or range")).to_have_value("203.0.113.3")
        page.get_by_label("Reason (optional)").fill("key sharing <b>ring</b>")
        page.get_by_role("button", name="Ban", exact=True).click()
        expect(page.get_by_role("cell", name="key sharing <b>ring</b>")).to_be_visible()
        expect(page.get_by_role("cell", name="Lee Manager")).to_be_visible()
        look(page, screenshot, "admin-bans")
        page.get_by_role("button", name="Lift the ban on 203.0.113.3").click()
        expect(page.get_by_text("No ban.")).to_be_visible()
        assert dialogs == []


async def seed_oversight(app) -> str:
    """A license with a few audit rows (one with before/after values), security events, and a
    signed-in administrator; returns the session cookie's value."""
    from license_server.db import staff as staff_rows
    from license_server.licensing.actors import Actor, ActorKind
    from license_server.staff import sessions
    from license_server.web.admin import STAFF

    runtime = app[RUNTIME]
    await seed(runtime)
    async with runtime.db.write() as conn:
        await runtime.licenses.audit.append(
            conn, at=int(time.time()), actor=Actor(ActorKind.STAFF, "1"),
            action="product.update", target="product:1", source_ip="192.0.2.10",
            detail={"before": {"seats": 2, "name": "My Module"},
                    "after": {"seats": 5, "name": "My Module Pro"}},
        )  # fmt: skip
        account_id = await staff_rows.insert_account(
            conn, email="ann@example.org", name="Ann Admin", role="admin", password_hash="x",
            now=int(time.time()),
        )  # fmt: skip
        await staff_rows.set_totp(conn, account_id, b"enrolled", 1)
        session_id = sessions.new_session_id()
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account_id,
            csrf_token="csrf-ann", mfa_passed=True, now=int(time.time()),
        )  # fmt: skip
    events = app[STAFF].events
    await events.record(events_kind("sign_in_failed"), typed_email="typo@example.org",
                        source_ip="198.51.100.7", user_agent="Mozilla/5.0 (X11; Linux)",
                        detail={"reason": "unknown_account"})  # fmt: skip
    await events.record(events_kind("sign_in_ok"), account_id=account_id,
                        email="ann@example.org", source_ip="192.0.2.10",
                        detail={"second_factor": "totp"})  # fmt: skip
    await events.record(events_kind("permission_denied"), account_id=account_id,
                        email="ann@example.org", source_ip="2001:db8::5",
                        detail={"permission": "staff:read", "method": "GET",
                                "path": "/admin/staff"})  # fmt: skip
    return session_id


def events_kind(name: str):
    from license_server.staff.security_events import EventKind

    return EventKind(name)


def test_the_audit_log_and_security_events_pages(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        session_id = server.call(seed_oversight(app))
        page.context.add_cookies(
            [{"name": "__Host-staff-session", "value": session_id,
              "url": server.url.replace("http://", "https://"),
              "secure": True, "httpOnly": True, "sameSite": "Lax"}]
        )  # fmt: skip
        page.goto(server.url + "/admin")
        page.get_by_role("navigation").get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        expect(page.locator("table.changes ins").first).to_contain_text("My Module Pro")
        look(page, screenshot, "admin-audit")
        page.get_by_role("button", name="Verify the chain").click()
        expect(page.get_by_role("status")).to_contain_text("The chain is intact")
        look(page, screenshot, "admin-audit-verified")
        # Keyboard only: the action filter, then Enter submits the form.
        page.get_by_label("Action").fill("product.")
        page.get_by_label("Action").press("Enter")
        page.wait_for_url("**/admin/audit?*action=product.*")
        expect(page.locator("tbody tr").first).to_contain_text("product.update")

        page.get_by_role("navigation").get_by_role("link", name="Security").click()
        expect(page.get_by_role("heading", name="Security events")).to_be_visible()
        expect(page.get_by_text("unknown address #")).to_be_visible()
        look(page, screenshot, "admin-security")
        page.get_by_label("Kind").select_option("permission_denied")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("cell", name="permission denied")).to_be_visible()
        page.goto(server.url + "/admin/security?ip=nonsense")
        look(page, screenshot, "admin-security-bad-filter")


# -- a product's page and a license's changes (tests/test_admin_products.py and
# tests/test_admin_license_edit.py test them through HTTP; here: the real pages, axe, widths) --


async def seed_edits(runtime, role: str) -> tuple[int, str, str]:
    """A product, a license bound to shop.example.com and reissued once, and a signed-in
    member of staff with `role`: (license id, key, session id)."""
    from license_server.db import staff as staff_rows
    from license_server.licensing.lifecycle import Action
    from license_server.staff import sessions

    await runtime.licenses.create_product(PRODUCT)
    license, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="Smith & Sons", email="ops@smith.example",
                    domains=("*.example.com",)),
        actor=CLI,
    )  # fmt: skip
    await runtime.licenses.apply(license.id, Action.REISSUE, actor=CLI)
    session_id = sessions.new_session_id()
    async with runtime.db.write() as conn:
        account = await staff_rows.insert_account(
            conn, email=f"{role}@example.org", name="Lee Manager", role=role, password_hash="x",
            now=1,
        )  # fmt: skip
        await staff_rows.set_totp(conn, account, b"enrolled", 1)
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account,
            csrf_token="csrf-browser", mfa_passed=True, now=runtime.licenses.now(),
        )  # fmt: skip
    return license.id, key, session_id


def test_a_manager_edits_a_product_and_changes_a_license(page, screenshot, settings):
    from license_server.web.admin import COOKIE

    app = create_app(settings)
    with live_server(app) as server:
        license_id, key, session_id = server.call(seed_edits(app[RUNTIME], "license_manager"))
        # Signed in already (the first test walks the sign-in pages): the session's cookie.
        cookie = {"name": COOKIE, "value": session_id, "domain": "127.0.0.1", "path": "/",
                  "secure": True, "httpOnly": True, "sameSite": "Lax"}  # fmt: skip
        page.context.add_cookies([cookie])
        assert verify(server.url, key)["status"] == "active"  # binds shop.example.com

        # A product's page: every option, the secret never shown; a refusal names the field.
        page.goto(server.url + "/admin/products")
        page.get_by_role("link", name="mymod").click()
        expect(page.get_by_role("heading", name="Product mymod")).to_be_visible()
        look(page, screenshot, "admin-product")
        assert "s3cret" not in page.content()
        page.get_by_label("Seats (domains per license, 1–100000)").fill("-1")
        page.get_by_role("button", name="Save the product").click()
        expect(page.get_by_role("alert")).to_contain_text("seats:")
        look(page, screenshot, "admin-product-refused")
        page.get_by_label("Seats (domains per license, 1–100000)").fill("3")
        page.get_by_label("Features (one per line; modules receive them in every answer)").fill(
            "reports\napi"
        )
        page.get_by_label("Free trial: one per domain").check()
        page.get_by_role("button", name="Save the product").click()
        expect(page.get_by_role("status")).to_contain_text("Saved.")
        assert verify(server.url, key)["license"]["features"] == ["reports", "api"]

        # A license's page: extend, edit rules (a refusal first), release, reset reissues.
        page.goto(f"{server.url}/admin/licenses/{license_id}")
        look(page, screenshot, "admin-license-edit")
        page.get_by_label("New last valid day (UTC)").fill("2031-06-30")
        page.get_by_role("button", name="Set the expiry").click()
        expect(page.locator(".stats")).to_contain_text("2031-06-30")
        assert verify(server.url, key)["license"]["expires_at"] == "2031-07-01T00:00:00Z"
        page.get_by_label(re.compile("^Seats")).fill("many")
        page.get_by_label(re.compile("^Allowed domains")).fill("exa mple.com")
        page.get_by_role("button", name="Save the rules").click()
        expect(page.get_by_role("alert")).to_contain_text("seats:")
        look(page, screenshot, "admin-license-rules-refused")
        page.get_by_label(re.compile("^Seats")).fill("5")
        page.get_by_label(re.compile("^Allowed domains")).fill("")
        page.get_by_role("button", name="Save the rules").click()
        expect(page.locator(".stats")).to_contain_text("1 / 5")
        assert verify(server.url, key)["license"]["seats"] == 5
        page.get_by_role("button", name="Release domain shop.example.com").click()
        expect(page.get_by_text("Nothing yet: the first check binds.")).to_be_visible()
        page.get_by_role("button", name="Reset the reissue count").click()
        expect(page.get_by_text("reissued 0 times")).to_be_visible()


async def seed_keys_and_traffic(runtime) -> str:
    """An admin session; a rotated key with licenses of the old one checking in; a day of
    verifications with refusals (one reason is markup) for the dashboard's chart."""
    from license_server.crypto.keystore import KeyStore
    from license_server.db import staff as staff_rows
    from license_server.licensing.attempt_hours import fold_closed_hours
    from license_server.licensing.attempt_log import Attempt
    from license_server.licensing.signing_keys import SigningKeys
    from license_server.staff import sessions

    license_id = await seed(runtime)
    keys = SigningKeys(runtime.licenses, KeyStore(runtime.settings.keys_dir), runtime.keyring)
    new = await keys.add(CLI)
    await keys.activate(new.kid, CLI)
    await keys.add(CLI)  # published, waiting for module releases
    now = int(time.time())
    rows = []
    for minutes in range(0, 36 * 60, 7):
        at = now - minutes * 60
        refused = minutes % 5 == 0
        rows.append(
            Attempt(
                at_ms=at * 1000, endpoint="native", source_ip="192.0.2.1", reported_ip="",
                domain_raw="", domain="shop.example.com", directory="",
                license_id=license_id, key_hash=None, product="mymod",
                result="invalid" if refused else "active",
                reason=("<b>odd</b>" if minutes % 3 == 0 else "domain_not_allowed")
                if refused else "ok",
                client_version=("2.0.1", "1.4.0")[minutes % 2], user_agent="",
                latency_us=100,
            ).row()
        )  # fmt: skip
    await runtime.db.attempts.write(rows, [])
    await fold_closed_hours(runtime.db, now)
    session_id = sessions.new_session_id()
    async with runtime.db.write() as conn:
        account = await staff_rows.insert_account(
            conn, email="ann@example.org", name="Ann Admin", role="admin", password_hash="x",
            now=now,
        )  # fmt: skip
        await staff_rows.set_totp(conn, account, b"enrolled", now)
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account,
            csrf_token="csrf", mfa_passed=True, now=now,
        )  # fmt: skip
    return session_id


def test_the_dashboard_chart_and_the_signing_keys_page(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        session_id = server.call(seed_keys_and_traffic(app[RUNTIME]))
        page.context.add_cookies(
            [{"name": "__Host-staff-session", "value": session_id, "domain": "127.0.0.1",
              "path": "/", "secure": True, "httpOnly": True, "sameSite": "Lax"}]
        )  # fmt: skip
        page.goto(server.url + "/admin")
        expect(
            page.get_by_role("img", name=re.compile("Verifications and refusals"))
        ).to_be_visible()
        expect(page.get_by_text("<b>odd</b>").first).to_be_visible()  # text, not markup
        look(page, screenshot, "admin-dashboard-chart")
        page.get_by_text("The numbers, hour by hour").click()
        expect(page.get_by_role("columnheader", name="Hour (UTC)")).to_be_visible()

        page.get_by_role("navigation").get_by_role("link", name="Keys", exact=True).click()
        expect(page.get_by_role("heading", name="Signing keys")).to_be_visible()
        expect(page.get_by_role("cell", name="2.0.1")).to_be_visible()
        page.locator("summary", has_text="Public key").first.click()
        look(page, screenshot, "admin-keys")
        page.get_by_role("button", name="Activate").first.click()
        expect(page.get_by_role("status")).to_contain_text("Activated")
        look(page, screenshot, "admin-keys-activated")
        page.get_by_role("button", name="Retire").first.click()
        expect(page.get_by_role("heading", name="Not possible now")).to_be_visible()
        look(page, screenshot, "admin-keys-refused")


def test_the_license_list_filters_and_bulk_issue(page, screenshot, settings):
    """The list's search and filters, the bulk form and the page of issued keys (#12)."""
    from license_server.db import staff as staff_rows
    from license_server.staff import sessions

    app = create_app(settings)
    with live_server(app) as server:
        server.call(seed(app[RUNTIME]))
        session_id = sessions.new_session_id()

        async def signed_in() -> None:
            runtime = app[RUNTIME]
            async with runtime.db.write() as conn:
                account = await staff_rows.insert_account(
                    conn, email="lm@example.org", name="Lee", role="license_manager",
                    password_hash="x", now=1,
                )  # fmt: skip
                await staff_rows.set_totp(conn, account, b"enrolled", 1)
                await staff_rows.insert_session(
                    conn, session_key=sessions.session_key(session_id), account_id=account,
                    csrf_token="csrf-lm", mfa_passed=True, now=runtime.licenses.now(),
                )  # fmt: skip

        server.call(signed_in())
        cookie = {"name": "__Host-staff-session", "value": session_id, "domain": "127.0.0.1",
                  "path": "/", "secure": True, "httpOnly": True, "sameSite": "Lax"}  # fmt: skip
        page.context.add_cookies([cookie])
        page.goto(server.url + "/admin/licenses/bulk")
        look(page, screenshot, "admin-license-bulk")
        page.get_by_label(re.compile("Number of licenses")).fill("5")
        page.get_by_label("Licensee").fill("Reseller & Co")
        page.get_by_label("Email address").fill("orders@reseller.example")
        page.get_by_role("button", name="Issue them").click()
        expect(page.locator("code.secret")).to_have_count(5)
        look(page, screenshot, "admin-bulk-issued")
        with page.expect_download() as download:
            page.get_by_role("link", name=re.compile("Download the 5 keys")).click()
        lines = download.value.path().read_text().splitlines()
        assert lines[0].startswith("id,key,") and len(lines) == 6

        page.goto(server.url + "/admin/licenses")
        page.get_by_label("Search", exact=True).fill("orders@reseller.example")
        page.get_by_label("Status").select_option("pending")
        page.get_by_label("Product").select_option("mymod")
        page.get_by_label("Valid through, on or after").fill("2020-01-01")
        page.get_by_label("Search", exact=True).press("Enter")  # keyboard submits
        expect(page.get_by_text("Searched by e-mail")).to_be_visible()
        expect(page.get_by_text("No license matches.")).to_be_visible()  # none expires
        page.get_by_label("Valid through, on or after").fill("")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("tbody tr")).to_have_count(5)
        look(page, screenshot, "admin-licenses-filtered")


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


def test_the_webhooks_pages(page, screenshot, settings):
    """Webhooks (issue #14): add an endpoint with the keyboard and mouse, see it paused after
    its receiver kept failing (warning, reason, alert), resume it; each page scanned by axe."""
    from license_server import appkeys
    from license_server.webhooks.delivery import Deliverer
    from tests.conftest import with_sections
    from tests.webhook_receiver import Receiver

    hooks = {"allow_private_targets": True, "allow_http": True, "send": False,
             "pause_after_failures": 2}  # fmt: skip
    app = create_app(with_sections(settings, webhooks=hooks))
    with live_server(app) as server:
        receiver = server.call(Receiver().start())
        try:
            _sign_in_as_first_admin(page, server, app)
            page.goto(server.url + "/admin/webhooks")
            expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
            look(page, screenshot, "admin-webhooks-empty")
            page.get_by_label("URL (https://)").fill(receiver.url)
            page.get_by_label("Description (optional)").fill("Billing system")
            page.get_by_label("license.created").check()
            page.get_by_label("alert.raised").focus()
            page.keyboard.press("Space")
            page.get_by_role("button", name="Add the endpoint").click()
            expect(page.get_by_role("heading", name=re.compile("^Webhook \\d+"))).to_be_visible()

            async def fail_twice():
                runtime = app[appkeys.RUNTIME]
                receiver.answers.extend([500, 500])
                await seed(runtime)
                await runtime.licenses.issue(
                    LicenseSpec(product="mymod", licensee="B", email="b@example.org"), actor=CLI
                )
                deliverer = Deliverer(runtime.db, app[appkeys.SETTINGS].webhooks,
                                      app[appkeys.WEBHOOK_KEY], alerts=runtime.alerts)  # fmt: skip
                await deliverer.step()
                return deliverer

            deliverer = server.call(fail_twice())
            page.goto(server.url + "/admin/webhooks")
            expect(page.get_by_role("alert")).to_contain_text("1 endpoint paused")
            look(page, screenshot, "admin-webhooks-paused")
            page.get_by_role("link", name=receiver.url).first.click()
            expect(page.get_by_text("Paused since")).to_be_visible()
            look(page, screenshot, "admin-webhook-paused")
            page.get_by_role("button", name="Resume and redeliver").click()
            expect(page.get_by_role("status")).to_contain_text("deliveries will be sent again")
            assert server.call(deliverer.drain()) == 3  # two licenses and the alert
            page.reload()
            look(page, screenshot, "admin-webhook")
            server.call(deliverer.close())
        finally:
            server.call(receiver.stop())


async def seed_alerts(runtime) -> int:
    """A license with a sharing alert (rich evidence) and a few others; returns the first."""
    from license_server.licensing.alerts import AlertSignal, Severity

    license_id = await seed(runtime)
    first = await runtime.alerts.raise_(
        AlertSignal(
            "key_sharing", f"license:{license_id}", Severity.HIGH,
            f"License {license_id} was checked from 6 different sites in the last hour; "
            "it has 2 seats. The key may be shared.",
            {"sites": 6, "seats": 2, "window_seconds": 3600,
             "domains": ["shop-a.example", "shop-b.example", "pirate.example"],
             "sample_attempts": [{"id": 1, "at_ms": int(time.time() * 1000),
                                  "source_ip": "203.0.113.9", "domain": "pirate.example"}]},
            license_id,
        )
    )  # fmt: skip
    for n, severity in enumerate((Severity.LOW, Severity.MEDIUM)):
        await runtime.alerts.raise_(
            AlertSignal("key_guessing", f"net:198.51.10{n}.0/24", severity,
                        f"42 unknown keys from 198.51.10{n}.0/24 in 10 minutes.",
                        {"unknown_keys": 42, "window_seconds": 600})
        )  # fmt: skip
    return first.alert_id


def test_the_alerts_pages_and_the_dashboard_card(page, screenshot, settings):
    """Issue #15: the alerts list, one alert's evidence, Acknowledge and Resolve by keyboard."""
    app = create_app(settings)
    with live_server(app) as server:
        _sign_in_as_first_admin(page, server, app)
        alert_id = server.call(seed_alerts(app[RUNTIME]))
        page.goto(server.url + "/admin")
        expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
        look(page, screenshot, "admin-dashboard-alerts")
        page.get_by_role("navigation").get_by_role("link", name="Alerts", exact=True).click()
        expect(page.get_by_role("heading", name="Alerts", exact=True)).to_be_visible()
        expect(page.locator("tbody tr")).to_have_count(3)
        look(page, screenshot, "admin-alerts")
        page.get_by_label("Severity").select_option("high")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tbody tr")).to_have_count(1)
        page.get_by_role("link", name=re.compile("was checked from 6 different sites")).click()
        expect(page.get_by_role("heading", name=f"Alert {alert_id}: key sharing")).to_be_visible()
        expect(page.get_by_text("shop-a.example, shop-b.example, pirate.example")).to_be_visible()
        look(page, screenshot, "admin-alert")
        page.get_by_role("button", name="Acknowledge").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_text("acknowledged (by staff:")).to_be_visible()
        page.get_by_role("button", name="Resolve").click()
        expect(page.get_by_text("resolve by staff:")).to_be_visible()
        look(page, screenshot, "admin-alert-resolved")

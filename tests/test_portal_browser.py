"""The customer page in a real browser (issue #14): headless Chromium, axe, screenshots at 1280
and 360 px, keyboard where it matters. Plain `def` tests (tests/browser.py says why); the app
runs in a thread of its own, its clock fixed (the cooldown's end is an exact time)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.web.portal import mail
from license_server.web.portal.views import NOT_ACCEPTED
from tests.browser import assert_accessible, each_width, live_server

T0 = 1_900_000_000  # 2030-03-17 17:46:40 UTC


def look(page, screenshot, name: str) -> None:
    for _ in each_width(page):
        screenshot(page, name)
        assert_accessible(page)


async def seed(runtime) -> tuple[int, str]:
    runtime.licenses.clock = lambda: T0
    await runtime.licenses.create_product(
        ProductSpec(code="mymod", name="My Module", seats=2, max_reissues=2,
                    reissue_cooldown_hours=24)
    )  # fmt: skip
    license, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="Smith & Sons", email="ops@smith.example",
                    notes="staff only"),
        actor=CLI,
    )  # fmt: skip
    return license.id, key


def sign_in_by_keyboard(page, url: str, key: str) -> None:
    page.goto(url + "/activate")
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")  # the key field
    expect(page.get_by_label("License key")).to_be_focused()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your license")).to_be_visible()


def test_a_customer_activates_releases_reissues_and_meets_the_cooldown(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        license_id, key = server.call(seed(app[RUNTIME]))
        page.goto(server.url + "/activate")
        expect(page.get_by_role("heading", name="Activate your license")).to_be_visible()
        look(page, screenshot, "portal-key")
        sign_in_by_keyboard(page, server.url, key)
        expect(page.get_by_text("0 of 2 in use")).to_be_visible()
        assert key not in page.content() and "staff only" not in page.content()
        look(page, screenshot, "portal-license")

        # Activate by keyboard: type into the field, Enter submits.
        page.get_by_label("Activate a domain").fill("https://WWW.Shop.Example.com/cart")
        page.get_by_label("Activate a domain").press("Enter")
        expect(page.get_by_role("status")).to_contain_text("shop.example.com is now bound")
        expect(page.get_by_role("listitem").filter(has_text="shop.example.com")).to_be_visible()
        expect(page.get_by_text("1 of 2 in use")).to_be_visible()
        page.get_by_label("Activate a domain").fill("localhost")
        page.get_by_role("button", name="Activate").click()
        expect(page.get_by_role("status")).to_contain_text("uses no seat")
        look(page, screenshot, "portal-activated")

        with page.expect_download() as download:
            page.get_by_role("link", name="Local key for shop.example.com").click()
        assert download.value.suggested_filename == "license-mymod-shop.example.com.jwt"
        assert download.value.path().read_text().count(".") == 2  # a JWT

        page.get_by_role("button", name="Release localhost").click()
        expect(page.get_by_role("status")).to_contain_text("localhost is released")
        expect(page.get_by_role("listitem").filter(has_text="localhost")).to_have_count(0)

        page.get_by_role("button", name="Reissue the license").click()
        expect(page.get_by_role("status")).to_contain_text("Your license is reissued")
        expect(page.get_by_text("No domain is bound yet")).to_be_visible()
        expect(page.get_by_text("You can reissue again from 2030-03-18 17:46 UTC.")).to_be_visible()
        look(page, screenshot, "portal-reissued")

        page.get_by_role("button", name="Reissue the license").click()
        alert = page.get_by_role("alert")
        ends = "2030-03-18 17:46 UTC"
        expect(alert).to_have_text(
            f"This license was reissued recently. You can reissue it again from {ends}."
        )
        look(page, screenshot, "portal-cooldown")
        license = server.call(app[RUNTIME].licenses.license_by_id(license_id))
        assert license.reissue_count == 1

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Activate your license")).to_be_visible()


def test_a_key_that_is_not_genuine_and_then_too_many(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        _, key = server.call(seed(app[RUNTIME]))
        page.goto(server.url + "/activate")
        forged = key[:-1] + ("A" if key[-1] != "A" else "B")
        for n, guess in enumerate([forged, "NOPE-1234", "wrong"] + ["X" * 20] * 7):
            page.get_by_label("License key").fill(guess)
            with page.expect_response(lambda r: r.request.method == "POST") as answer:
                page.get_by_role("button", name="Show my license").click()
            assert answer.value.status == 400
            expect(page.get_by_role("alert")).to_have_text(NOT_ACCEPTED)
            if n == 0:
                look(page, screenshot, "portal-not-accepted")
        page.get_by_label("License key").fill(key)  # genuine, but too late
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Show my license").click()
        assert answer.value.status == 429
        assert int(answer.value.headers["retry-after"]) > 0
        expect(page.get_by_role("heading", name="Too many attempts")).to_be_visible()
        look(page, screenshot, "portal-too-many")


def test_the_confirmation_page_of_an_e_mailed_link(page, screenshot, settings):
    app = create_app(settings)
    with live_server(app) as server:
        license_id, _ = server.call(seed(app[RUNTIME]))
        token = server.call(
            mail.new_link(app[RUNTIME].db, license_id, "release", "shop.example.com", T0)
        )
        page.goto(f"{server.url}/activate/confirm/{token}")
        expect(page.get_by_role("button", name="Release shop.example.com")).to_be_visible()
        expect(page.get_by_text(re.compile("until 2030-03-17 18:16 UTC"))).to_be_visible()
        look(page, screenshot, "portal-confirm")

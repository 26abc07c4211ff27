"""The browser-test harness (tests/browser.py) proved on a tiny page served by the test itself.

The page is sent with a strict CSP, as the staff and customer pages will be, so these show that
the harness works under one: the page loads, a form can be filled and submitted, a screenshot is a
PNG of the viewport's width, and axe runs and reports. The scan is also run on a deliberately
inaccessible page, so a harness whose scan silently finds nothing cannot pass. Everything waits by
Playwright's auto-waiting (`expect`, locators); nothing sleeps.
"""

from __future__ import annotations

import html
import struct

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from tests.browser import (
    AXE_VERSION,
    NARROW,
    WIDE,
    assert_accessible,
    axe_source,
    axe_violations,
    chromium_executable,
    each_width,
    format_violations,
    live_server,
)

NONCE = "abc"
CSP = f"default-src 'none'; style-src 'nonce-{NONCE}'"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The nonce'd style gives the body a margin; the style without the nonce would hide the probe,
# but the CSP blocks it: the probe stays visible only while the CSP is enforced.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style nonce="{nonce}">body {{ margin: 24px; font-family: sans-serif; }}</style>
<style>#csp-probe {{ display: none; }}</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p id="csp-probe">Inline styles without the nonce are blocked.</p>
{body}
</main>
</body>
</html>
"""

GOOD_FORM = """<form method="post" action="/greet">
<label for="name">Your name</label>
<input id="name" name="name" type="text" autocomplete="name" required>
<button type="submit">Greet me</button>
</form>"""

# An image without alt text and an input without a label: both are critical for axe.
BAD_BODY = """<img src="/pixel.png">
<form method="post" action="/greet">
<input name="name" type="text">
<button type="submit">Greet me</button>
</form>"""

# The smallest valid PNG (1×1, transparent), so the bad page's image loads from this server.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5f0000000049454e44ae426082"
)


def _page(title: str, body: str) -> web.Response:
    text = PAGE.format(title=title, nonce=NONCE, body=body)
    return web.Response(
        text=text, content_type="text/html", headers={"Content-Security-Policy": CSP}
    )


async def _good(request: web.Request) -> web.Response:
    return _page("Harness form", GOOD_FORM)


async def _bad(request: web.Request) -> web.Response:
    return _page("Harness bad page", BAD_BODY)


async def _greet(request: web.Request) -> web.Response:
    name = (await request.post()).get("name", "")
    body = f'<p role="status">Hello, {html.escape(str(name))}</p>'
    return _page("Greeting", body)


async def _pixel(request: web.Request) -> web.Response:
    return web.Response(body=PIXEL, content_type="image/png")


@pytest.fixture(scope="module")
def site():
    app = web.Application()
    app.router.add_get("/", _good)
    app.router.add_get("/bad", _bad)
    app.router.add_post("/greet", _greet)
    app.router.add_get("/pixel.png", _pixel)
    with live_server(app) as server:
        yield server.url


def test_the_page_loads_with_its_csp_enforced(page: Page, site: str):
    response = page.goto(site + "/")
    assert response is not None and response.ok
    assert response.headers["content-security-policy"] == CSP
    expect(page).to_have_title("Harness form")
    expect(page.get_by_role("heading", name="Harness form")).to_be_visible()
    # The nonce'd style applies; the one without the nonce does not: the CSP is not bypassed.
    assert page.evaluate("getComputedStyle(document.body).marginTop") == "24px"
    expect(page.locator("#csp-probe")).to_be_visible()


def test_a_form_is_filled_and_submitted(page: Page, site: str):
    page.goto(site + "/")
    page.get_by_label("Your name").fill("Ada <Lovelace>")
    page.get_by_role("button", name="Greet me").click()
    expect(page.get_by_role("status")).to_have_text("Hello, Ada <Lovelace>")
    assert page.url == site + "/greet"


def test_screenshots_are_pngs_at_each_width(page: Page, site: str, screenshot):
    page.goto(site + "/")
    widths = []
    for width in each_width(page):
        path = screenshot(page, "harness-form")
        data = path.read_bytes()
        assert path.name == f"harness-form-{width}.png"
        assert data.startswith(PNG_SIGNATURE), path
        # IHDR, the first chunk, holds the image's width and height (big-endian).
        png_width, png_height = struct.unpack(">II", data[16:24])
        assert png_width == width and png_height >= 100, (png_width, png_height)
        widths.append(width)
    assert widths == [WIDE, NARROW]
    assert page.viewport_size == {"width": WIDE, "height": 800}


def test_axe_finds_nothing_serious_on_the_good_pages(page: Page, site: str):
    page.goto(site + "/")
    for _width in each_width(page):
        assert_accessible(page)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_role("button", name="Greet me").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert_accessible(page)  # after a navigation: axe is injected again


def test_axe_finds_the_violations_of_the_bad_page(page: Page, site: str):
    page.goto(site + "/bad")
    expect(page.locator("img")).to_be_visible()
    violations = axe_violations(page)
    found = {violation["id"] for violation in violations}
    assert {"image-alt", "label"} <= found, format_violations(violations)
    assert all(violation["impact"] in ("serious", "critical") for violation in violations)
    with pytest.raises(AssertionError, match="image-alt"):
        assert_accessible(page)


def test_requests_off_this_machine_are_blocked_and_reported(page: Page, offsite_requests):
    # .invalid never resolves (RFC 2606), and the guard aborts the request before any lookup.
    # set_content waits for the load event, which waits for the image's request to be settled.
    page.set_content('<img src="http://example.invalid/tracker.png" alt="">')
    assert offsite_requests == ["http://example.invalid/tracker.png"]
    offsite_requests.clear()  # expected here; otherwise `page` fails the test at teardown


def test_the_vendored_axe_is_the_pinned_version_with_its_licence():
    source = axe_source()  # checks the sha256
    assert source.startswith(f"/*! axe v{AXE_VERSION}\n")
    assert "http://mozilla.org/MPL/2.0/" in source[:1000]  # the MPL-2.0 header, intact


def test_a_missing_chromium_fails_with_an_install_hint(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        chromium_executable(tmp_path / "chromium")

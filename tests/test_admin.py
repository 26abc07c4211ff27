"""The staff admin's sign-in pages (issue #12), through the app: first-run set-up link,
password then TOTP enrolment or code, cookies, CSRF and Origin checks, throttling, headers,
hostile forms. Browser tests (Playwright) come with the management pages."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from license_server.licensing.actors import CLI
from license_server.staff import totp
from license_server.web.admin import COOKIE, STAFF, first_run_link

PASSWORD = "Correct-Horse-7-Battery"


class Browser:
    """Just enough of a visitor: cookies by hand (the test client's jar keeps no Secure
    cookie over http), and Origin on every POST as browsers send it."""

    def __init__(self, client) -> None:
        self.client = client
        self.cookie = ""
        self.origin = str(client.make_url("")).rstrip("/")

    def _remember(self, response) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            jar = SimpleCookie(header)
            if COOKIE in jar:
                self.cookie = jar[COOKIE].value

    async def get(self, path: str):
        response = await self.client.get(
            path, headers={"Cookie": f"{COOKIE}={self.cookie}"}, allow_redirects=False
        )
        self._remember(response)
        return response, await response.text()

    async def post(self, path: str, data, origin: str | None = "", **headers):
        headers = {"Cookie": f"{COOKIE}={self.cookie}", **headers}
        if origin is not None:
            headers["Origin"] = origin or self.origin
        response = await self.client.post(path, data=data, headers=headers, allow_redirects=False)
        self._remember(response)
        return response, await response.text()


def field(page: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', page).group(1)


def now_code(secret_text: str) -> str:
    import time

    secret = totp.secret_from_text(secret_text)
    return TOTP(secret, 6, SHA1(), 30, enforce_key_length=False).generate(time.time()).decode()


@pytest.fixture
async def visitor(client):
    """Not `browser`: that name is tests/browser.py's Chromium (tests using it run last)."""
    return Browser(client)


async def setup_admin(visitor: Browser) -> None:
    token = await visitor.client.app[STAFF].first_admin_link(CLI)
    response, _ = await visitor.post(
        f"/admin/setup/{token}",
        {"email": "ann@example.org", "name": "Ann Admin", "password": PASSWORD,
         "confirm": PASSWORD},
    )  # fmt: skip
    assert response.status == 200


async def signed_in(visitor: Browser) -> str:
    """Set up, sign in and enrol; returns the authenticator's secret."""
    await setup_admin(visitor)
    response, _ = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": PASSWORD}
    )
    assert response.status == 303 and response.headers["Location"] == "/admin/enrol"
    _, page = await visitor.get("/admin/enrol")
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page).group(1)
    response, page = await visitor.post(
        "/admin/enrol",
        {"csrf": field(page, "csrf"), "enrolment": field(page, "enrolment"),
         "code": now_code(secret)},
    )  # fmt: skip
    assert response.status == 200 and "recovery codes" in page
    return secret


async def test_first_run_prints_a_link_and_the_admin_is_made_through_it(aiohttp_client, settings):
    from license_server.app import create_app

    client = await aiohttp_client(create_app(settings))
    line = first_run_link(client.app, "http://127.0.0.1:8080")
    path = "/admin/setup/" + line.split("/admin/setup/")[1].split()[0]
    visitor = Browser(client)
    response, page = await visitor.get("/admin")
    assert response.status == 200 and "No staff account yet" in page
    response, page = await visitor.get(path)
    assert response.status == 200 and "Create your staff account" in page
    form = {"email": "ann@example.org", "name": "Ann", "password": PASSWORD, "confirm": "x"}
    response, page = await visitor.post(path, form)
    assert response.status == 400 and "The two passwords differ." in page
    response, page = await visitor.post(path, {**form, "password": "weak", "confirm": "weak"})
    assert response.status == 400 and "12" in page
    response, page = await visitor.post(path, {**form, "confirm": PASSWORD})
    assert response.status == 200 and "Your account is ready" in page
    response, page = await visitor.post(path, {**form, "confirm": PASSWORD})
    assert response.status == 410  # used once


async def test_sign_in_enrol_and_the_session_cookie(visitor):
    await setup_admin(visitor)
    response, page = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": "Wrong-Horse-7-Battery"}
    )
    assert response.status == 400 and "not right" in page
    response, _ = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": PASSWORD}
    )
    cookie = SimpleCookie(response.headers["Set-Cookie"])[COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/" and not cookie["domain"]  # what __Host- requires
    half = visitor.cookie
    response, _ = await visitor.get("/admin")
    assert response.status == 303 and response.headers["Location"] == "/admin/enrol"
    _, page = await visitor.get("/admin/enrol")
    svg = page.split("<svg")[1].split("</svg>")[0]
    assert "<title>" in svg and not re.search(r"href|src=|url\(", svg)  # nothing fetched
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page).group(1)
    tampered = field(page, "enrolment")[:-2] + "00"
    response, bad = await visitor.post(
        "/admin/enrol",
        {"csrf": field(page, "csrf"), "enrolment": tampered, "code": now_code(secret)},
    )
    assert response.status == 400 and "expired" in bad
    response, page = await visitor.post(
        "/admin/enrol",
        {"csrf": field(page, "csrf"), "enrolment": field(page, "enrolment"),
         "code": now_code(secret)},
    )  # fmt: skip
    assert response.status == 200 and len(re.findall(r"<li>[0-9a-z]{4}-", page)) == 10
    assert visitor.cookie != half  # a new session id once the second factor passed
    response, page = await visitor.get("/admin")
    assert response.status == 200 and "Dashboard" in page
    visitor.cookie = half
    response, _ = await visitor.get("/admin")
    assert response.status == 303 and response.headers["Location"] == "/admin/login"


async def test_posts_need_our_origin_and_the_session_csrf_token(visitor):
    await signed_in(visitor)
    _, page = await visitor.get("/admin")
    csrf = field(page, "csrf")
    response, _ = await visitor.post("/admin/logout", {"csrf": csrf}, origin="https://evil.example")
    assert response.status == 403
    response, _ = await visitor.post("/admin/logout", {"csrf": csrf}, origin=None)
    assert response.status == 403  # neither Origin nor Sec-Fetch-Site: refused
    response, _ = await visitor.post("/admin/logout", {"csrf": "forged"})
    assert response.status == 403
    response, _ = await visitor.get("/admin")
    assert response.status == 200  # still signed in
    response, _ = await visitor.post(
        "/admin/logout", {"csrf": csrf}, origin=None, **{"Sec-Fetch-Site": "same-origin"}
    )
    assert response.status == 303
    response, _ = await visitor.get("/admin")
    assert response.status == 303  # signed out


async def test_sign_in_is_throttled_with_a_page_that_says_when(visitor):
    await setup_admin(visitor)
    for _ in range(5):
        response, _ = await visitor.post(
            "/admin/login", {"email": "ann@example.org", "password": "Wrong-Horse-7-Battery"}
        )
        assert response.status == 400
    response, page = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": PASSWORD}
    )
    assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    assert "Try again in" in page
    # The 429 page carries the headers as every page does (it is rendered without a template).
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_every_admin_page_carries_the_security_headers(visitor):
    for path in ("/admin", "/admin/login", "/admin/nope", "/admin/setup/unknown"):
        response, page = await visitor.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
        assert f'<style nonce="{nonce}">' in page
        assert response.headers["Cache-Control"] == "no-store"
        assert "camera=()" in response.headers["Permissions-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Python" not in response.headers.get("Server", "")
        assert "<script" not in page


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"email=a&email=b&password=x", {}, 400),  # duplicate fields
        (b"email=%ff%fe&password=x", {}, 400),  # not UTF-8
        (b"x=" + b"a" * 20_000, {}, 413),  # oversize
        (b"\x00\x01\x02", {"Content-Type": "multipart/form-data; boundary=zz"}, 400),
    ],
)
async def test_hostile_forms_get_a_page_not_a_500(visitor, body, headers, status):
    await setup_admin(visitor)
    response = await visitor.client.post(
        "/admin/login",
        data=body,
        headers={"Origin": visitor.origin,
                 "Content-Type": "application/x-www-form-urlencoded", **headers},
    )  # fmt: skip
    assert response.status == status, await response.text()
    assert response.content_type == "text/html"


async def test_a_garbage_session_cookie_is_just_signed_out(visitor):
    await setup_admin(visitor)
    for value in ("x" * 5000, "../..", "\u00e9t\u00e9"):
        visitor.cookie = value
        response, _ = await visitor.get("/admin")
        assert response.status == 303 and response.headers["Location"] == "/admin/login"


def test_the_served_first_run_prints_a_working_set_up_link(tmp_path, database_url):
    from tests.server_process import ServerProcess

    with ServerProcess(database_url, tmp_path / "keys", tmp_path) as server:
        line = next(x for x in server.log().splitlines() if "/admin/setup/" in x)
        link = line.split(" at ")[1].split()[0]
        assert link.startswith(server.url + "/admin/setup/")
        page = server.get(link.removeprefix(server.url)).decode()
    assert "Create your staff account" in page


async def test_a_password_change_keeps_this_session_and_ends_the_others(visitor, client):
    await signed_in(visitor)
    other = Browser(client)
    other.cookie = visitor.cookie  # stands for a second session below
    _, page = await visitor.get("/admin/password")
    csrf = field(page, "csrf")
    form = {"csrf": csrf, "current": PASSWORD, "new": "Another-Good-Passphrase-9",
            "confirm": "Another-Good-Passphrase-9"}  # fmt: skip
    for changes, expected in (
        ({"confirm": "different"}, "differ"),
        ({"current": "Wrong-Horse-7-Battery"}, "not right"),
        ({"new": "password1234", "confirm": "password1234"}, "common"),
    ):
        response, page = await visitor.post("/admin/password", {**form, **changes})
        assert response.status == 400 and expected in page, page
    before = visitor.cookie
    response, page = await visitor.post("/admin/password", form)
    assert response.status == 200 and "Your password is changed" in page
    assert visitor.cookie != before  # a new session id
    response, _ = await visitor.get("/admin")
    assert response.status == 200
    response, _ = await other.get("/admin")  # the session from before the change ended
    assert response.status == 303

"""What every page of the customer page shares: rendering, headers, the form reader, errors.

The admin's headers on every answer (web/admin/base.py `security_headers`: a CSP with a
per-request nonce on top of `default-src 'none'`, no framing, `form-action 'self'`,
`Cache-Control: no-store`; ASVS 4.0.3 V14.4). No script at all. Every POST passes the Origin /
Sec-Fetch-Site check (V4.2.2, V13.2.3; staff/sessions.origin_allowed) and the CSRF token of
its cookie (sessions.py); a body is a small urlencoded form, one value per field, valid UTF-8
(V5.1.1, V5.1.4), or a 4xx page. Errors are pages without internals (V7.4.1).
"""

from __future__ import annotations

import html
import logging
import secrets
import time

import jinja2
from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt
from license_server.staff.sessions import origin_allowed
from license_server.web.admin.base import security_headers
from license_server.web.attempts import new_attempt
from license_server.web.portal.guard import GuessGuard
from license_server.web.portal.mail import Mailer
from license_server.web.portal.sessions import COOKIE, CustomerSession, CustomerSessions

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 4 * 1024
PAGES = web.AppKey("portal_pages", jinja2.Environment)
SESSIONS = web.AppKey("portal_sessions", CustomerSessions)
GUARD = web.AppKey("portal_guard", GuessGuard)
MAILER = web.AppKey("portal_mailer", Mailer)  # absent: releases and reissues are done at once
# The cookie this request carries, or the one its answer sets (a new CSRF seed).
COOKIE_VALUE = web.RequestKey("portal_cookie", str)
NEW_COOKIE = web.RequestKey("portal_new_cookie", bool)


class FormRefused(Exception):
    """A POST that fails a check; `status` and one line for the page."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def render(
    request: web.Request, template: str, *, status: int = 200, **context: object
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    page = request.config_dict[PAGES].get_template(template)
    context.setdefault("title", "")
    context.setdefault("errors", [])
    context.setdefault("notice", "")
    context.setdefault("session", None)
    cookie = cookie_of(request)
    body = page.render(nonce=nonce, csrf=request.config_dict[SESSIONS].csrf_for(cookie), **context)
    response = web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8",
        headers=security_headers(nonce),
    )  # fmt: skip
    if request.get(NEW_COOKIE):
        set_cookie(response, cookie)
    return response


def message(request: web.Request, status: int, title: str, *paragraphs: str) -> web.Response:
    return render(request, "portal/message.html", status=status, title=title,
                  paragraphs=paragraphs)  # fmt: skip


def cookie_of(request: web.Request) -> str:
    """The cookie's value; a request without one gets a new one (set on the answer), the seed
    of its forms' CSRF token."""
    value = request.get(COOKIE_VALUE)
    if value is None:
        value = request.cookies.get(COOKIE, "")
        if not value or len(value) > 100 or not value.isascii():
            value = CustomerSessions.new_token()
            request[NEW_COOKIE] = True
        request[COOKIE_VALUE] = value
    return value


def set_cookie(response: web.StreamResponse, value: str) -> None:
    # No max-age: the browser forgets it when it closes; the server ends the session sooner.
    response.set_cookie(
        COOKIE, value, path="/", secure=True, httponly=True, samesite="Strict"
    )  # fmt: skip


async def current_session(request: web.Request) -> CustomerSession | None:
    return await request.config_dict[SESSIONS].current(request.cookies.get(COOKIE))


async def read_form(request: web.Request, *, csrf_seed: str | None = None) -> dict[str, str]:
    """The POST's fields after the Origin and CSRF checks. `csrf_seed`: what the token is
    derived from when not the cookie (a confirmation link's token)."""
    own = {f"{request.scheme}://{request.host}"}
    if not origin_allowed(
        request.method, request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own
    ):
        raise FormRefused(403, "The request did not come from this site.")
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise FormRefused(413, "The form is too large.")
    if request.content_type != "application/x-www-form-urlencoded":
        raise FormRefused(415, "Send the form as the page does.")
    try:
        data = await request.post()
    except (ValueError, UnicodeDecodeError, web.HTTPRequestEntityTooLarge):
        raise FormRefused(400, "The form could not be read.") from None
    fields: dict[str, str] = {}
    for name in data:
        values = data.getall(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise FormRefused(400, "The form could not be read.")
        if "\ufffd" in values[0]:  # percent-encoded bytes that were not UTF-8
            raise FormRefused(400, "The form is not valid UTF-8.")
        fields[name] = values[0]
    sessions = request.config_dict[SESSIONS]
    seed = csrf_seed if csrf_seed is not None else request.cookies.get(COOKIE)
    if not sessions.csrf_matches(seed, fields.get("csrf")):
        raise FormRefused(403, "The form has expired: reload the page and try again.")
    return fields


def client_ip(request: web.Request) -> str:
    return request.config_dict[appkeys.CLIENT_IP](request)


async def log_attempt(
    request: web.Request,
    result: str,
    reason: str,
    *,
    license_id: int | None = None,
    product: str = "",
    domain: str = "",
    key_hash: bytes | None = None,
) -> None:
    """One row in the attempt log (endpoint "portal") for each key entry and action. The
    action is done (and audited) by then: a row that cannot be written is logged, not shown."""
    attempt: Attempt = new_attempt(request, client_ip(request), "portal")
    attempt.result, attempt.reason = result, reason
    attempt.license_id, attempt.product, attempt.key_hash = license_id, product, key_hash
    attempt.domain = attempt.domain_raw = domain
    try:
        await request.config_dict[appkeys.ATTEMPT_LOG].append(attempt)
    except Exception:
        log.exception("customer page: an attempt could not be logged (%s %s)", result, reason)


# A refused key entry is answered without a template: a storm of them shares the loop.
_TOO_MANY = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Too many attempts · License activation</title></head><body><main>"
    "<h1>Too many attempts</h1><p>{text}</p></main></body></html>"
)


def too_many(retry_after: int) -> web.Response:
    headers = security_headers("")
    headers["Content-Security-Policy"] = (
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    headers["Retry-After"] = str(retry_after)
    minutes = max(1, (retry_after + 59) // 60)
    text = (
        "Too many license keys that were not accepted came from your network. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    return web.Response(
        text=_TOO_MANY.format(text=html.escape(text)), status=429, content_type="text/html",
        charset="utf-8", headers=headers,
    )  # fmt: skip


@web.middleware
async def portal_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Refused forms and HTTP errors become pages; anything else a page with an error id."""
    try:
        return await handler(request)
    except FormRefused as refused:
        return message(request, refused.status, "This form was not accepted", refused.text)
    except web.HTTPRedirection as exc:
        exc.headers.update(security_headers(""))
        raise
    except web.HTTPException as exc:
        return message(request, exc.status, exc.reason, "This page cannot be shown.")
    except Exception:
        error_id = secrets.token_hex(8)
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        return message(request, 500, "Something went wrong",
                       f"The page could not be shown. Error id: {error_id}.")  # fmt: skip


def utc_text(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def date_text(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))

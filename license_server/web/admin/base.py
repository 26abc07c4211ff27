"""What every admin page shares. Server-rendered (jinja2), no script at all.

The admin is a sub-application with its own middleware, which gives every page and
every error page (ASVS 4.0.3 V14.4): a CSP with a per-request nonce on top of
`default-src 'none'`, `frame-ancestors 'none'`, `form-action 'self'`; Referrer-Policy,
Permissions-Policy, nosniff and `Cache-Control: no-store`.

Every POST passes the Origin / Sec-Fetch-Site check (V4.2.2, V13.2.3) and, once a session
exists, its per-session CSRF token. The session cookie is `__Host-` prefixed, Secure, HttpOnly,
SameSite=Lax (V3.4); browsers accept Secure cookies on http://localhost and 127.0.0.1, which
are secure contexts. Sign-in is throttled per IP and per account with `limits` (V2.2.1), in
the rate-limit store (Redis when configured: one budget across instances).

Security events (V7.1.3, V7.2.2; staff/security_events.py): a permission refused by `requires`
and the first refusal of each identity by the sign-in throttle are recorded here; the
middleware tells the recorder each request's address and user agent. A password older than
`[staff] password_max_age_days` sends every page but the password page there (seed 000).
"""

from __future__ import annotations

import html
import logging
import math
import secrets
import time
from collections import Counter
from pathlib import Path

import jinja2
import limits
from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.staff import rbac, sessions
from license_server.staff.accounts import SignedIn, StaffAccounts
from license_server.staff.console import Console
from license_server.staff.editing import Editing
from license_server.staff.oversight import Oversight
from license_server.staff.security_events import EventKind, request_origin
from license_server.web.rate_limit import (
    BLOCK_SIGN_IN,
    InMemoryMovingWindow,
    IpBlocks,
    moving_window,
)

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
COOKIE = sessions.SESSION_COOKIE
COOKIE_SECONDS = 12 * 3600
SIGN_IN_RATE = "5/minute"
MAX_FORM_BYTES = 16 * 1024

PAGES = web.AppKey("admin_pages", jinja2.Environment)
STAFF = web.AppKey("staff_accounts", StaffAccounts)
SIGN_IN_LIMITER = web.AppKey("sign_in_limiter", object)
CONSOLE = web.AppKey("staff_console", Console)
OVERSIGHT = web.AppKey("staff_oversight", Oversight)  # the audit log and security events
EDITING = web.AppKey("staff_editing", Editing)  # product and license changes (staff/editing.py)
SIGNED_IN = web.RequestKey("signed_in", object)  # SignedIn | None, read once per request
PASSWORD_EXPIRED = web.RequestKey("password_expired", bool)
# What a signed-in member of staff with an expired password may still reach.
_EXPIRED_MAY = frozenset({"/admin/password", "/admin/logout", "/admin/sessions/end-all"})
EXPIRED_NOTICE = (
    "Your password is older than the maximum age set for this server: choose a new one to go on."
)
# The first run's set-up token: printed by `run.py serve` once the server listens.
FIRST_RUN_TOKEN = web.AppKey("first_run_token", str)


def _headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def security_headers(nonce: str = "") -> dict[str, str]:
    """The headers of every admin page, for answers not built by `render` (a CSV download)."""
    return _headers(nonce)


def render(
    request: web.Request, template: str, *, status: int = 200, **context: object
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    page = request.config_dict[PAGES].get_template(template)
    # The expiry notice goes on pages shown to the expired session itself (not on the page
    # that confirms the change, which renders with the new session).
    expired = request.get(PASSWORD_EXPIRED, False) and context.get("staff", request.get(
        SIGNED_IN)) is request.get(SIGNED_IN)  # fmt: skip
    for name, default in (("staff", request.get(SIGNED_IN)), ("title", ""), ("errors", []),
                          ("notice", EXPIRED_NOTICE if expired else ""),
                          ("error_title", "")):  # fmt: skip
        context.setdefault(name, default)
    body = page.render(nonce=nonce, **context)
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=_headers(nonce)
    )


def message(request: web.Request, status: int, title: str, *paragraphs: str, link=None):
    return render(
        request, "admin/message.html", status=status, title=title, paragraphs=paragraphs, link=link
    )


@web.middleware
async def admin_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Errors become pages (never a stack trace: V7.4.1); the session is read once."""
    request_origin.set((client_ip(request), request.headers.get("User-Agent", "")))
    staff = request[SIGNED_IN] = await _current(request)
    try:
        if staff is not None and staff.mfa_passed:
            if request.config_dict[STAFF].password_expired(staff.account):
                request[PASSWORD_EXPIRED] = True
                if request.path not in _EXPIRED_MAY:
                    raise redirect("/admin/password")
        return await handler(request)
    except web.HTTPRedirection as exc:
        exc.headers.update(_headers(secrets.token_urlsafe(16)))
        raise
    except web.HTTPException as exc:
        if exc.status == 429:
            return _too_many(exc.text or "", exc.headers.get("Retry-After", "60"))
        return message(request, exc.status, exc.reason, "This page cannot be shown.",
                       link={"href": "/admin", "text": "Go to the start page"})  # fmt: skip
    except Exception:
        error_id = secrets.token_hex(8)
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        return message(request, 500, "Something went wrong",
                       f"The page could not be shown. Error id: {error_id}.")  # fmt: skip


# A throttled request is answered as cheaply as possible: a storm of them from one address
# shares the event loop with verification (bench/login_storm.py). No template, no style.
_TOO_MANY = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Too many attempts · License server</title></head><body><main>"
    "<h1>Too many attempts</h1><p>{text}</p>"
    '<p><a href="/admin/login">Back to sign-in</a></p></main></body></html>'
)


def _too_many(text: str, retry_after: str) -> web.Response:
    headers = _headers("")
    headers["Content-Security-Policy"] = (
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    headers["Retry-After"] = retry_after
    body = _TOO_MANY.format(text=html.escape(text))
    return web.Response(
        text=body, status=429, content_type="text/html", charset="utf-8", headers=headers
    )


async def _current(request: web.Request) -> SignedIn | None:
    value = request.cookies.get(COOKIE, "")
    return await request.config_dict[STAFF].session(value) if value else None


def set_cookie(response: web.StreamResponse, signed_in: SignedIn) -> None:
    response.set_cookie(
        COOKIE, signed_in.session_id, max_age=COOKIE_SECONDS, path="/", secure=True,
        httponly=True, samesite="Lax",
    )  # fmt: skip


def redirect(location: str, signed_in: SignedIn | None = None, clear: bool = False):
    response = web.HTTPSeeOther(location)
    if signed_in is not None:
        set_cookie(response, signed_in)
    if clear:
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


def client_ip(request: web.Request) -> str:
    return request.config_dict[appkeys.CLIENT_IP](request)


async def read_form(request: web.Request) -> dict[str, str]:
    """A POST's fields after the Origin and CSRF checks; bad input is a 400 page, not a 500."""
    origin = request.headers.get("Origin")
    own = {f"{request.scheme}://{request.host}"}
    staff = request.get(SIGNED_IN)
    if not sessions.origin_allowed(
        request.method, origin, request.headers.get("Sec-Fetch-Site"), own
    ):
        await _forged(request, staff, "origin")
        raise web.HTTPForbidden(text="The request did not come from this site.")
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
    try:
        data = await request.post()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="The form could not be read.") from None
    fields = {}
    for name in data:
        values = data.getall(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise web.HTTPBadRequest(text="The form could not be read.")
        if "\ufffd" in values[0]:  # percent-encoded bytes that are not UTF-8, decoded lossily
            raise web.HTTPBadRequest(text="The form is not valid UTF-8.")
        fields[name] = values[0]
    if staff is not None and not sessions.csrf_matches(staff.csrf_token, fields.get("csrf")):
        await _forged(request, staff, "csrf_token")
        raise web.HTTPForbidden(text="The form has expired; reload the page and try again.")
    return fields


async def _forged(request: web.Request, staff: SignedIn | None, check: str) -> None:
    """A security event when a signed-in session's POST fails the Origin or CSRF check (ASVS
    4.0.3 V7.2.2: a possible cross-site request forgery against that member of staff). Without
    a session there is nobody to forge for, and recording would let anyone fill the table."""
    if staff is None:
        return
    await request.config_dict[STAFF].events.record(
        EventKind.FORGED_REQUEST, account_id=staff.account.id, email=staff.account.email,
        detail={"check": check, "method": request.method, "path": request.path,
                "origin": (request.headers.get("Origin") or "")[:200]},
    )  # fmt: skip


# -- sign-in throttling ---------------------------------------------------------------------


class SignInLimiter:
    """5 sign-in attempts per minute per IP and per account (`limits`, moving window); an IP
    under a temporary block (`IpBlocks`) is refused for as long as the block lasts."""

    def __init__(self, storage_uri: str, blocks: IpBlocks | None = None) -> None:
        self._limiter = moving_window(storage_uri)
        self._item = limits.parse(SIGN_IN_RATE)
        self.refused: Counter[str] = Counter()  # {"sign-in": refusals} for the metrics
        # Temporary blocks (repeated sign-in failures, the block_ip action): an `ip:` identity
        # that is blocked is refused before it spends anything (staff/sign_in_watch.py).
        self._blocks = blocks

    def close(self) -> None:
        if isinstance(self._limiter, InMemoryMovingWindow):
            self._limiter.close()  # its expiry thread

    async def refusals(self, *identities: str) -> dict[str, int]:
        """Spend one attempt for each identity; {identity: seconds to wait} of those out of
        attempts (empty: go on)."""
        waits = {}
        for identity in identities:
            if self._blocks is not None and identity.startswith("ip:"):
                blocked = await self._blocks.blocked(identity[3:], BLOCK_SIGN_IN)
                if blocked is not None:
                    waits[identity] = blocked.retry_after
                    continue
            if not await self._limiter.hit(self._item, "sign-in", identity):
                self.refused["sign-in"] += 1
                stats = await self._limiter.get_window_stats(self._item, "sign-in", identity)
                waits[identity] = max(1, math.ceil(stats.reset_time - time.time()))
        return waits

    async def retry_after(self, *identities: str) -> int | None:
        """Seconds to wait if any identity is out of attempts (`refusals`), else None."""
        waits = await self.refusals(*identities)
        return max(waits.values()) if waits else None


async def throttle(request: web.Request, *identities: str) -> None:
    refused = await request.config_dict[SIGN_IN_LIMITER].refusals(*identities)
    if refused:
        wait = max(refused.values())
        await _record_refusals(request, refused)
        raise web.HTTPTooManyRequests(
            text=f"Too many sign-in attempts. Try again in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )


async def _record_refusals(request: web.Request, refused: dict[str, int]) -> None:
    """A security event for the first refusal of each identity in its window (a storm of
    429s from one address is one row, not one write per request: bench/login_storm.py)."""
    events = request.config_dict[STAFF].events
    for identity, wait in refused.items():
        if not events.first_refusal(identity, time.monotonic() + wait):
            continue
        limit, _, value = identity.partition(":")
        detail = {"limit": limit, "path": request.path, "retry_after": wait}
        # An account identity is the address as typed: hashed, never stored (it may be a
        # password typed into the wrong box).
        typed = value if limit == "account" else None
        await events.record(EventKind.RATE_LIMITED, typed_email=typed, detail=detail)


async def _denied(request: web.Request, staff: SignedIn, permission: str) -> web.Response:
    await request.config_dict[STAFF].events.record(
        EventKind.PERMISSION_DENIED, account_id=staff.account.id, email=staff.account.email,
        detail={"permission": permission, "method": request.method, "path": request.path},
    )  # fmt: skip
    return forbidden(request)


def requires(permission: str):
    """Route-level check (the service checks again): signed in with both factors, and the
    role grants `permission`; otherwise the sign-in page or a 403 page."""

    def decorate(handler):
        async def checked(request: web.Request) -> web.StreamResponse:
            staff: SignedIn | None = request[SIGNED_IN]
            if staff is None:
                raise redirect("/admin/login")
            if not staff.mfa_passed:
                raise redirect("/admin/mfa" if staff.account.totp_secret else "/admin/enrol")
            if not rbac.has_permission(staff.account.role, permission):
                return await _denied(request, staff, permission)
            try:
                return await handler(request, staff)
            except rbac.PermissionDenied as denied:
                return await _denied(request, staff, denied.permission)

        return checked

    return decorate


def forbidden(request: web.Request) -> web.Response:
    return message(request, 403, "Not allowed", "Your role does not allow this.",
                   link={"href": "/admin", "text": "Go to the dashboard"})  # fmt: skip


def form_problems(exc: ValidationError) -> list[str]:
    """pydantic's errors as one line per field, for the form."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "form"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return problems


def split_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


def date_text(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def datetime_text(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def may(staff: SignedIn | None, permission: str) -> bool:
    """For templates: show a form only to a role that may use it (the route checks again)."""
    return staff is not None and rbac.has_permission(staff.account.role, permission)

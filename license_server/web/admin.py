"""The staff admin's pages (issue #12): first-run set-up, sign-in with a TOTP second factor,
enrolment with recovery codes, the dashboard. Server-rendered (jinja2), no script at all.

Mounted at /admin as a sub-application with its own middleware, which gives every page and
every error page (ASVS 4.0.3 V14.4): a CSP with a per-request nonce on top of
`default-src 'none'`, `frame-ancestors 'none'`, `form-action 'self'`; Referrer-Policy,
Permissions-Policy, nosniff and `Cache-Control: no-store`.

Every POST passes the Origin / Sec-Fetch-Site check (V4.2.2, V13.2.3) and, once a session
exists, its per-session CSRF token. The session cookie is `__Host-` prefixed, Secure, HttpOnly,
SameSite=Lax (V3.4); browsers accept Secure cookies on http://localhost and 127.0.0.1, which
are secure contexts. Sign-in is throttled per IP and per account with `limits` (V2.2.1), in
the rate-limit store (Redis when configured: one budget across instances).
"""

from __future__ import annotations

import html
import logging
import math
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import jinja2
import limits
from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.actors import SYSTEM
from license_server.licensing.lifecycle import Action, TransitionRefused
from license_server.licensing.models import Status
from license_server.licensing.service import Conflict, NotFound
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.staff import rbac, sessions, totp
from license_server.staff.accounts import PolicyRefused, SignedIn, SignInRefused, StaffAccounts
from license_server.staff.console import ACTION_PERMISSIONS, Console
from license_server.web.rate_limit import InMemoryMovingWindow, moving_window

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
COOKIE = sessions.SESSION_COOKIE
COOKIE_SECONDS = 12 * 3600
SIGN_IN_RATE = "5/minute"
MAX_FORM_BYTES = 16 * 1024

PAGES = web.AppKey("admin_pages", jinja2.Environment)
STAFF = web.AppKey("staff_accounts", StaffAccounts)
SIGN_IN_LIMITER = web.AppKey("sign_in_limiter", object)
CONSOLE = web.AppKey("staff_console", Console)
SIGNED_IN = web.RequestKey("signed_in", object)  # SignedIn | None, read once per request
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


def render(
    request: web.Request, template: str, *, status: int = 200, **context: object
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    page = request.config_dict[PAGES].get_template(template)
    for name, default in (("staff", request.get(SIGNED_IN)), ("title", ""), ("errors", []),
                          ("notice", ""), ("error_title", "")):  # fmt: skip
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
    request[SIGNED_IN] = await _current(request)
    try:
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


def _set_cookie(response: web.StreamResponse, signed_in: SignedIn) -> None:
    response.set_cookie(
        COOKIE, signed_in.session_id, max_age=COOKIE_SECONDS, path="/", secure=True,
        httponly=True, samesite="Lax",
    )  # fmt: skip


def _redirect(location: str, signed_in: SignedIn | None = None, clear: bool = False):
    response = web.HTTPSeeOther(location)
    if signed_in is not None:
        _set_cookie(response, signed_in)
    if clear:
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


def _client_ip(request: web.Request) -> str:
    return request.config_dict[appkeys.CLIENT_IP](request)


async def _form(request: web.Request) -> dict[str, str]:
    """A POST's fields after the Origin and CSRF checks; bad input is a 400 page, not a 500."""
    origin = request.headers.get("Origin")
    own = {f"{request.scheme}://{request.host}"}
    if not sessions.origin_allowed(
        request.method, origin, request.headers.get("Sec-Fetch-Site"), own
    ):
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
        fields[name] = values[0]
    staff = request.get(SIGNED_IN)
    if staff is not None and not sessions.csrf_matches(staff.csrf_token, fields.get("csrf")):
        raise web.HTTPForbidden(text="The form has expired; reload the page and try again.")
    return fields


# -- sign-in throttling ---------------------------------------------------------------------


class SignInLimiter:
    """5 sign-in attempts per minute per IP and per account (`limits`, moving window)."""

    def __init__(self, storage_uri: str) -> None:
        self._limiter = moving_window(storage_uri)
        self._item = limits.parse(SIGN_IN_RATE)

    def close(self) -> None:
        if isinstance(self._limiter, InMemoryMovingWindow):
            self._limiter.close()  # its expiry thread

    async def retry_after(self, *identities: str) -> int | None:
        """Spend one attempt for each identity; seconds to wait if any is out of attempts."""
        waits = []
        for identity in identities:
            if not await self._limiter.hit(self._item, "sign-in", identity):
                stats = await self._limiter.get_window_stats(self._item, "sign-in", identity)
                waits.append(max(1, math.ceil(stats.reset_time - time.time())))
        return max(waits) if waits else None


async def _throttle(request: web.Request, *identities: str) -> None:
    wait = await request.config_dict[SIGN_IN_LIMITER].retry_after(*identities)
    if wait is not None:
        raise web.HTTPTooManyRequests(
            text=f"Too many sign-in attempts. Try again in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )


# -- pages ----------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    staff: SignedIn | None = request[SIGNED_IN]
    accounts = request.config_dict[STAFF]
    if staff is None:
        if await accounts.needs_first_admin():
            return message(
                request, 200, "No staff account yet",
                "Open the one-time set-up link the server printed when it started, or make a "
                "new one on the server with: python run.py create-admin",
            )  # fmt: skip
        raise _redirect("/admin/login")
    if not staff.mfa_passed:
        raise _redirect("/admin/mfa" if staff.account.totp_secret else "/admin/enrol")
    runtime = request.config_dict[appkeys.RUNTIME]
    counts = await runtime.licenses.count_by_status()
    return render(request, "admin/dashboard.html", title="Dashboard",
                  licenses=[(status.value, n) for status, n in counts.items()])  # fmt: skip


async def setup(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    context = {"title": "Set up", "email": "", "name": ""}
    if request.method == "GET":
        return render(request, "admin/setup.html", **context)
    fields = await _form(request)
    context.update(email=fields.get("email", "")[:320], name=fields.get("name", "")[:200])
    password = fields.get("password", "")
    if password != fields.get("confirm", ""):
        return render(request, "admin/setup.html", status=400,
                      errors=["The two passwords differ."], **context)  # fmt: skip
    try:
        await request.config_dict[STAFF].redeem_setup_link(
            token, context["email"], context["name"], password
        )
    except PolicyRefused as refused:
        return render(request, "admin/setup.html", status=400, errors=refused.problems, **context)
    except SignInRefused as refused:
        return message(request, 410, "This link has been used or has expired", str(refused))
    ready = "Your account is ready. Sign in to set up your authenticator app."
    return render(
        request, "admin/login.html", title="Sign in", email=context["email"], notice=ready
    )


async def login(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return render(request, "admin/login.html", title="Sign in", email="")
    ip = _client_ip(request)
    await _throttle(request, f"ip:{ip}")  # before the body is even read
    fields = await _form(request)
    email = fields.get("email", "").strip().lower()[:320]
    await _throttle(request, f"account:{email}")
    try:
        signed_in = await request.config_dict[STAFF].sign_in(
            email, fields.get("password", ""), source_ip=ip,
            user_agent=request.headers.get("User-Agent", ""),
        )  # fmt: skip
    except (SignInRefused, ValueError, TypeError) as refused:
        message_text = str(refused) if isinstance(refused, SignInRefused) else None
        return render(request, "admin/login.html", status=400, title="Sign in", email=email,
                      errors=[message_text or SignInRefused().args[0]])  # fmt: skip
    next_page = "/admin/mfa" if signed_in.account.totp_secret else "/admin/enrol"
    raise _redirect(next_page, signed_in)


def _half_signed_in(request: web.Request) -> SignedIn:
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is None:
        raise _redirect("/admin/login")
    return staff


def _enrolment_token(request: web.Request, staff: SignedIn, secret: bytes) -> str:
    """The secret between the page and its form, encrypted and bound to this session (the
    browser cannot choose its own secret, nor carry one to another session)."""
    cipher = request.config_dict[appkeys.RUNTIME].licenses.cipher
    blob = cipher.encrypt("staff_enrolment", staff.csrf_token, totp.secret_to_text(secret))
    return blob.hex()


def _enrolment_secret(request: web.Request, staff: SignedIn, token: str) -> bytes | None:
    cipher = request.config_dict[appkeys.RUNTIME].licenses.cipher
    try:
        return totp.secret_from_text(
            cipher.decrypt("staff_enrolment", staff.csrf_token, bytes.fromhex(token))
        )
    except Exception:  # tampered, from another session, not hex: one answer for all
        return None


async def enrol(request: web.Request) -> web.StreamResponse:
    staff = _half_signed_in(request)
    if staff.account.totp_secret is not None:
        raise _redirect("/admin" if staff.mfa_passed else "/admin/mfa")
    errors: list[str] = []
    secret: bytes | None = None  # the one the page shows: kept after a mistyped code
    if request.method == "POST":
        fields = await _form(request)
        secret = _enrolment_secret(request, staff, fields.get("enrolment", ""))
        if secret is None:
            errors.append("The set-up expired; scan the new code below.")
        else:
            await _throttle(request, f"account:{staff.account.email}")
            try:
                promoted, codes = await request.config_dict[STAFF].enrol_and_sign_in(
                    staff, secret, fields.get("code", "").strip(), source_ip=_client_ip(request)
                )
            except SignInRefused as refused:
                errors.append(str(refused))
            else:
                response = render(request, "admin/recovery_codes.html", title="Recovery codes",
                                  codes=codes, staff=promoted)  # fmt: skip
                _set_cookie(response, promoted)
                return response
    if secret is None:
        secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, staff.account.email, "License server")
    return render(
        request, "admin/enrol.html", status=400 if errors else 200, title="Authenticator app",
        errors=errors, qr_svg=totp.qr_svg(uri), secret_text=totp.secret_to_text(secret),
        enrolment=_enrolment_token(request, staff, secret),
    )  # fmt: skip


async def mfa(request: web.Request) -> web.StreamResponse:
    staff = _half_signed_in(request)
    if staff.mfa_passed:
        raise _redirect("/admin")
    if staff.account.totp_secret is None:
        raise _redirect("/admin/enrol")
    if request.method == "GET":
        return render(request, "admin/mfa.html", title="Your code")
    fields = await _form(request)
    await _throttle(request, f"ip:{_client_ip(request)}", f"account:{staff.account.email}")
    try:
        promoted = await request.config_dict[STAFF].second_factor(
            staff, fields.get("code", "").strip()[:40], source_ip=_client_ip(request)
        )
    except SignInRefused as refused:
        return render(request, "admin/mfa.html", status=400, title="Your code",
                      errors=[str(refused)])  # fmt: skip
    raise _redirect("/admin", promoted)


async def password(request: web.Request) -> web.StreamResponse:
    """Any member of staff, for their own account (both factors passed)."""
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is None or not staff.mfa_passed:
        raise _redirect("/admin/login")
    if request.method == "GET":
        return render(request, "admin/password.html", title="Password")
    fields = await _form(request)
    errors: list[str] = []
    if fields.get("new", "") != fields.get("confirm", ""):
        errors = ["The two new passwords differ."]
    else:
        await _throttle(request, f"account:{staff.account.email}")  # guesses of the current one
        try:
            fresh = await request.config_dict[STAFF].change_password(
                staff, fields.get("current", ""), fields.get("new", "")
            )
        except PolicyRefused as refused:
            errors = refused.problems
        except (SignInRefused, ValueError, TypeError) as refused:
            errors = [str(refused) if isinstance(refused, SignInRefused) else "Not accepted."]
        else:
            response = render(request, "admin/message.html", title="Password changed",
                              paragraphs=["Your password is changed; your other sessions ended."],
                              link={"href": "/admin", "text": "Go to the dashboard"},
                              staff=fresh)  # fmt: skip
            _set_cookie(response, fresh)
            return response
    return render(request, "admin/password.html", status=400, title="Password", errors=errors)


async def logout(request: web.Request) -> web.StreamResponse:
    await _form(request)
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is not None:
        await request.config_dict[STAFF].sign_out(staff)
    raise _redirect("/admin/login", clear=True)


async def end_all_sessions(request: web.Request) -> web.StreamResponse:
    staff = _half_signed_in(request)
    await _form(request)
    await request.config_dict[STAFF].sign_out_everywhere(staff.account.id, actor=staff.actor)
    raise _redirect("/admin/login", clear=True)


# -- licenses -------------------------------------------------------------------------------


def requires(permission: str):
    """Route-level check (the service checks again): signed in with both factors, and the
    role grants `permission`; otherwise the sign-in page or a 403 page."""

    def decorate(handler):
        async def checked(request: web.Request) -> web.StreamResponse:
            staff: SignedIn | None = request[SIGNED_IN]
            if staff is None:
                raise _redirect("/admin/login")
            if not staff.mfa_passed:
                raise _redirect("/admin/mfa" if staff.account.totp_secret else "/admin/enrol")
            if not rbac.has_permission(staff.account.role, permission):
                return _forbidden(request)
            try:
                return await handler(request, staff)
            except rbac.PermissionDenied:
                return _forbidden(request)

        return checked

    return decorate


def _forbidden(request: web.Request) -> web.Response:
    return message(request, 403, "Not allowed", "Your role does not allow this.",
                   link={"href": "/admin", "text": "Go to the dashboard"})  # fmt: skip


def _license_id(request: web.Request) -> int:
    license_id = int(request.match_info["id"])
    if not 0 < license_id < 2**63:
        raise web.HTTPNotFound
    return license_id


@requires("license:read")
async def licenses(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    query = request.query
    status = query.get("status") or None
    before_text = query.get("before", "")
    if len(query.getall("q", [])) > 1 or (not before_text.isdigit() and before_text):
        return message(request, 400, "Bad search", "The search could not be read.")
    try:
        page = await request.config_dict[CONSOLE].licenses(
            staff, before=int(before_text) if before_text else None, status=status,
            search=query.get("q", "")[:300],
        )  # fmt: skip
    except ValueError as exc:
        return message(request, 400, "Bad search", str(exc))
    return render(request, "admin/licenses.html", title="Licenses", rows=page.rows,
                  next_before=page.next_before, status_filter=status or "",
                  search=query.get("q", "")[:300], statuses=[s.value for s in Status],
                  may_issue=rbac.has_permission(staff.account.role, "license:create"))  # fmt: skip


# Buttons on a license's page: (action, label); shown when the role may and the status allows.
_BUTTONS = (
    ("suspend", "Suspend", {Status.ACTIVE, Status.PENDING}),
    ("unsuspend", "Unsuspend", {Status.SUSPENDED}),
    ("reissue", "Reissue (free its bindings)", {Status.ACTIVE, Status.PENDING}),
    ("revoke", "Revoke", {Status.ACTIVE, Status.PENDING, Status.SUSPENDED, Status.EXPIRED}),
)


async def _license_view(request, staff: SignedIn, license_id: int, **extra):
    try:
        license, attempts = await request.config_dict[CONSOLE].license(staff, license_id)
    except NotFound:
        raise web.HTTPNotFound from None
    role = staff.account.role
    actions = [
        (action, label)
        for action, label, statuses in _BUTTONS
        if license.status in statuses
        and rbac.has_permission(role, ACTION_PERMISSIONS[Action(action)])
    ]
    if rbac.has_permission(role, "license:reveal_key") and "revealed" not in extra:
        actions.append(("reveal", "Show the key"))
    extra.setdefault("revealed", "")
    extra.setdefault("revealed_note", "")
    return render(request, "admin/license.html", title=f"License {license.id}", license=license,
                  attempts=attempts, actions=actions, **extra)  # fmt: skip


@requires("license:read")
async def license_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _license_view(request, staff, _license_id(request))


async def license_action(request: web.Request) -> web.StreamResponse:
    name = request.match_info["action"]
    if name == "reveal":
        return await _reveal(request)
    try:
        action = Action(name)
    except ValueError:
        raise web.HTTPNotFound from None
    if action not in ACTION_PERMISSIONS:
        raise web.HTTPNotFound
    return await requires(ACTION_PERMISSIONS[action])(_apply_action)(request)


async def _apply_action(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await _form(request)
    license_id = _license_id(request)
    action = Action(request.match_info["action"])
    try:
        await request.config_dict[CONSOLE].apply(staff, license_id, action)
    except NotFound:
        raise web.HTTPNotFound from None
    except TransitionRefused as refused:
        return message(request, 409, "Not possible now", str(refused),
                       link={"href": f"/admin/licenses/{license_id}", "text": "Back"})  # fmt: skip
    raise _redirect(f"/admin/licenses/{license_id}")


@requires("license:reveal_key")
async def _reveal(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await _form(request)
    license_id = _license_id(request)
    try:
        key = await request.config_dict[CONSOLE].reveal_key(staff, license_id)
    except NotFound:
        raise web.HTTPNotFound from None
    return await _license_view(request, staff, license_id, revealed=key)


# -- products and new licenses ------------------------------------------------------------------


def _problems(exc: ValidationError) -> list[str]:
    """pydantic's errors as one line per field, for the form."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "form"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return problems


async def _products_view(request, staff: SignedIn, status: int = 200, **extra):
    extra["form"] = defaultdict(str, extra.get("form", {}))  # a fresh form: every field empty
    return render(
        request, "admin/products.html", status=status, title="Products",
        products=await request.config_dict[CONSOLE].products(staff),
        may_create=rbac.has_permission(staff.account.role, "product:create"), **extra,
    )  # fmt: skip


@requires("product:read")
async def products(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _products_view(request, staff)


@requires("product:create")
async def product_create(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await _form(request)
    form = {name: fields.get(name, "")[:200] for name in
            ("code", "name", "seats", "local_key_days", "grace_days", "free_trial")}  # fmt: skip
    try:
        spec = ProductSpec(
            code=form["code"], name=form["name"], seats=form["seats"] or 1,
            local_key_days=form["local_key_days"] or 7, grace_days=form["grace_days"] or 14,
            free_trial=form["free_trial"] == "on",
        )  # fmt: skip
        await request.config_dict[CONSOLE].create_product(staff, spec)
    except ValidationError as exc:
        return await _products_view(request, staff, 400, errors=_problems(exc), form=form)
    except Conflict as exc:
        return await _products_view(request, staff, 409, errors=[str(exc)], form=form)
    raise _redirect("/admin/products")


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


@requires("license:create")
async def license_new(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    products_list = await console.products(staff)
    form: dict[str, str] = {}
    errors: list[str] = []
    if request.method == "POST":
        fields = await _form(request)
        names = ("product", "licensee", "company", "email", "domains", "expires")
        form = {name: fields.get(name, "")[:2000] for name in names}
        try:
            spec = LicenseSpec(
                product=form["product"], licensee=form["licensee"], company=form["company"],
                email=form["email"], domains=_split(form["domains"]),
                expires=form["expires"] or None,
            )  # fmt: skip
            license, key = await console.issue(staff, spec)
        except ValidationError as exc:
            errors = _problems(exc)
        except (NotFound, ValueError) as exc:
            errors = [str(exc)]
        else:
            return await _license_view(
                request, staff, license.id, revealed=key,
                revealed_note="Issued. The key, shown this once:",
            )  # fmt: skip
    return render(request, "admin/license_new.html", status=400 if errors else 200,
                  title="Issue a license", products=products_list, form=defaultdict(str, form),
                  errors=errors)  # fmt: skip


# -- staff ------------------------------------------------------------------------------------


async def _staff_view(request, staff: SignedIn, status: int = 200, **extra):
    role = staff.account.role
    extra.setdefault("invitation", "")
    extra.setdefault("invited_role", "")
    return render(
        request, "admin/staff.html", status=status, title="Staff",
        accounts=await request.config_dict[CONSOLE].staff(staff), roles=rbac.ROLES,
        may_invite=rbac.has_permission(role, "staff:create"),
        may_update=rbac.has_permission(role, "staff:update"),
        may_reset=rbac.has_permission(role, "staff:reset_mfa"), **extra,
    )  # fmt: skip


@requires("staff:read")
async def staff_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _staff_view(request, staff)


@requires("staff:create")
async def staff_invite(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await _form(request)
    role = fields.get("role", "")
    try:
        token = await request.config_dict[CONSOLE].invite(staff, role)
    except PolicyRefused as refused:
        return await _staff_view(request, staff, 400, errors=refused.problems)
    link = f"{request.scheme}://{request.host}/admin/setup/{quote(token)}"
    return await _staff_view(request, staff, invitation=link, invited_role=role)


async def staff_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    permission = {"disable": "staff:update", "enable": "staff:update",
                  "reset-mfa": "staff:reset_mfa"}.get(action)  # fmt: skip
    if permission is None:
        raise web.HTTPNotFound
    return await requires(permission)(_staff_action)(request)


async def _staff_action(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await _form(request)
    account_id, action = int(request.match_info["id"]), request.match_info["action"]
    console = request.config_dict[CONSOLE]
    try:
        if action == "reset-mfa":
            await console.reset_second_factor(staff, account_id)
        else:
            await console.set_disabled(staff, account_id, action == "disable")
    except ValueError as exc:
        return await _staff_view(request, staff, 400, errors=[str(exc)])
    raise _redirect("/admin/staff")


def _date(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def _datetime(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


# -- the sub-application ----------------------------------------------------------------------


async def staff_ctx(app: web.Application) -> AsyncIterator[None]:
    """On the root application, after the runtime: the staff accounts and the sign-in limiter;
    with no staff account yet, a one-time set-up token (issue #12, first run), which
    `run.py serve` prints as a link once the server listens (`first_run_link`)."""
    runtime = app[appkeys.RUNTIME]
    service = runtime.licenses
    app[STAFF] = StaffAccounts(runtime.db, service.write, service.cipher, service.hasher,
                               runtime.once)  # fmt: skip
    settings = runtime.settings
    app[SIGN_IN_LIMITER] = SignInLimiter(settings.rate_limit.storage_uri)
    app[CONSOLE] = Console(service, app[STAFF])
    if app[appkeys.MAINTENANCE] and await app[STAFF].needs_first_admin():
        app[FIRST_RUN_TOKEN] = await app[STAFF].first_admin_link(SYSTEM)
    yield
    app[SIGN_IN_LIMITER].close()


def first_run_link(app: web.Application, base_url: str) -> str | None:
    """The line to print when there is no staff account yet, or None."""
    token = app.get(FIRST_RUN_TOKEN)
    if token is None:
        return None
    return (
        "No staff account yet: create the first administrator at "
        f"{base_url}/admin/setup/{quote(token)} (valid for one hour, once)"
    )


def admin_app() -> web.Application:
    admin = web.Application(middlewares=[admin_middleware], client_max_size=MAX_FORM_BYTES)
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    pages.filters["date"] = _date
    pages.filters["datetime"] = _datetime
    admin[PAGES] = pages
    admin.router.add_get("", index, name="admin")
    admin.router.add_get("/", index)
    admin.router.add_route("*", "/setup/{token}", setup, name="admin_setup")
    admin.router.add_route("*", "/login", login, name="admin_login")
    admin.router.add_route("*", "/enrol", enrol, name="admin_enrol")
    admin.router.add_route("*", "/mfa", mfa, name="admin_mfa")
    admin.router.add_post("/logout", logout, name="admin_logout")
    admin.router.add_route("*", "/password", password, name="admin_password")
    admin.router.add_post("/sessions/end-all", end_all_sessions, name="admin_end_all")
    admin.router.add_get("/staff", staff_page, name="admin_staff")
    admin.router.add_post("/staff/invite", staff_invite, name="admin_staff_invite")
    admin.router.add_post(
        "/staff/{id:[0-9]{1,19}}/{action:[a-z-]{1,20}}", staff_action, name="admin_staff_action"
    )
    admin.router.add_get("/products", products, name="admin_products")
    admin.router.add_post("/products", product_create, name="admin_product_create")
    admin.router.add_route("*", "/licenses/new", license_new, name="admin_license_new")
    admin.router.add_get("/licenses", licenses, name="admin_licenses")
    admin.router.add_get("/licenses/{id:[0-9]{1,19}}", license_page, name="admin_license")
    admin.router.add_post(
        "/licenses/{id:[0-9]{1,19}}/{action:[a-z_]{1,20}}", license_action, name="admin_action"
    )
    return admin

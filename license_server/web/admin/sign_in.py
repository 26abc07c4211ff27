"""Signing in: the first-run set-up link, password, TOTP enrolment and code, password change,
signing out (ASVS 4.0.3 V2, V3)."""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys
from license_server.staff import totp
from license_server.staff.accounts import PolicyRefused, SignedIn, SignInRefused
from license_server.web.admin.base import (
    SIGNED_IN,
    STAFF,
    client_ip,
    message,
    read_form,
    redirect,
    render,
    set_cookie,
    throttle,
)  # fmt: skip


async def setup(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    context = {"title": "Set up", "email": "", "name": ""}
    if request.method == "GET":
        return render(request, "admin/setup.html", **context)
    fields = await read_form(request)
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
    ip = client_ip(request)
    await throttle(request, f"ip:{ip}")  # before the body is even read
    fields = await read_form(request)
    email = fields.get("email", "").strip().lower()[:320]
    await throttle(request, f"account:{email}")
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
    raise redirect(next_page, signed_in)


def _half_signed_in(request: web.Request) -> SignedIn:
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is None:
        raise redirect("/admin/login")
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
        raise redirect("/admin" if staff.mfa_passed else "/admin/mfa")
    errors: list[str] = []
    secret: bytes | None = None  # the one the page shows: kept after a mistyped code
    if request.method == "POST":
        fields = await read_form(request)
        secret = _enrolment_secret(request, staff, fields.get("enrolment", ""))
        if secret is None:
            errors.append("The set-up expired; scan the new code below.")
        else:
            await throttle(request, f"account:{staff.account.email}")
            try:
                promoted, codes = await request.config_dict[STAFF].enrol_and_sign_in(
                    staff, secret, fields.get("code", "").strip(), source_ip=client_ip(request)
                )
            except SignInRefused as refused:
                errors.append(str(refused))
            else:
                response = render(request, "admin/recovery_codes.html", title="Recovery codes",
                                  codes=codes, staff=promoted)  # fmt: skip
                set_cookie(response, promoted)
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
        raise redirect("/admin")
    if staff.account.totp_secret is None:
        raise redirect("/admin/enrol")
    if request.method == "GET":
        return render(request, "admin/mfa.html", title="Your code")
    fields = await read_form(request)
    await throttle(request, f"ip:{client_ip(request)}", f"account:{staff.account.email}")
    try:
        promoted = await request.config_dict[STAFF].second_factor(
            staff, fields.get("code", "").strip()[:40], source_ip=client_ip(request)
        )
    except SignInRefused as refused:
        return render(request, "admin/mfa.html", status=400, title="Your code",
                      errors=[str(refused)])  # fmt: skip
    raise redirect("/admin", promoted)


async def password(request: web.Request) -> web.StreamResponse:
    """Any member of staff, for their own account (both factors passed)."""
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is None or not staff.mfa_passed:
        raise redirect("/admin/login")
    if request.method == "GET":
        return render(request, "admin/password.html", title="Password")
    fields = await read_form(request)
    errors: list[str] = []
    if fields.get("new", "") != fields.get("confirm", ""):
        errors = ["The two new passwords differ."]
    else:
        await throttle(request, f"account:{staff.account.email}")  # guesses of the current one
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
            set_cookie(response, fresh)
            return response
    return render(request, "admin/password.html", status=400, title="Password", errors=errors)


async def logout(request: web.Request) -> web.StreamResponse:
    await read_form(request)
    staff: SignedIn | None = request[SIGNED_IN]
    if staff is not None:
        await request.config_dict[STAFF].sign_out(staff)
    raise redirect("/admin/login", clear=True)


async def end_all_sessions(request: web.Request) -> web.StreamResponse:
    staff = _half_signed_in(request)
    await read_form(request)
    await request.config_dict[STAFF].sign_out_everywhere(staff.account.id, actor=staff.actor)
    raise redirect("/admin/login", clear=True)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_route("*", "/setup/{token}", setup, name="admin_setup")
    router.add_route("*", "/login", login, name="admin_login")
    router.add_route("*", "/enrol", enrol, name="admin_enrol")
    router.add_route("*", "/mfa", mfa, name="admin_mfa")
    router.add_post("/logout", logout, name="admin_logout")
    router.add_route("*", "/password", password, name="admin_password")
    router.add_post("/sessions/end-all", end_all_sessions, name="admin_end_all")

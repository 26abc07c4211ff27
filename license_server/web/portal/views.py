"""The customer page's views: enter a key, then see and manage that one license.

Handlers are thin: the checks and writes are the service's (`LicenseService.customer_reissue`,
`release_binding`, `Verifier.activate_domain`, all through the one write path with the actor
`customer:<license id>`, so each lands in the audit log), and each key entry and action is
also a row of the attempt log (endpoint "portal"). A key that is not genuine, whatever the
reason (unknown, forged, malformed), gets one message and one status (`NOT_ACCEPTED`) and
spends a guess (guard.py); the page never shows staff data (notes) or another license.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web

from license_server import appkeys
from license_server.licensing import lifecycle
from license_server.licensing.actors import customer_actor
from license_server.licensing.decision import Answer, Facts
from license_server.licensing.domains import InvalidHost, normalise_domain
from license_server.licensing.models import License, Status
from license_server.licensing.service import NotFound, reissue_available_at
from license_server.licensing.verifier import license_key_hash
from license_server.settings import PortalSettings
from license_server.web.portal import mail
from license_server.web.portal.base import (
    GUARD,
    MAILER,
    SESSIONS,
    client_ip,
    current_session,
    date_text,
    log_attempt,
    message,
    read_form,
    render,
    set_cookie,
    too_many,
    utc_text,
)
from license_server.web.portal.sessions import COOKIE, CustomerSession
from license_server.web.rate_limit import UNKNOWN_KEY_PER_IP

log = logging.getLogger(__name__)

NOT_ACCEPTED = (
    "This license key was not accepted. Check that you copied the whole key from your order "
    "e-mail, then try again."
)
SESSION_ENDED = "Your session has ended. Enter your license key again."
MAX_KEY_CHARS = 200  # keys are at most 128 characters (DESIGN.md); legacy keys are shorter
MAX_DOMAIN_CHARS = 300
_REASONS = {
    "seat_limit": "All seats of this license are in use. Release a domain first.",
    "domain_not_allowed": "This license may not be used on that domain.",
    "banned": "That domain cannot be activated. Contact the vendor.",
    "trial_already_used": "A trial of this product was already used on that domain; "
    "this license is now suspended. Contact the vendor.",
    "expired": "This license has expired.",
    "suspended": "This license is suspended. Contact the vendor.",
    "revoked": "This license has been revoked.",
}


def _settings(request: web.Request) -> PortalSettings:
    return request.config_dict[appkeys.SETTINGS].portal


def _runtime(request: web.Request):
    return request.config_dict[appkeys.RUNTIME]


# -- the start page and key entry -------------------------------------------------------------


async def start(request: web.Request) -> web.StreamResponse:
    wait = await request.config_dict[GUARD].retry_after(client_ip(request))
    if wait is not None:
        return too_many(wait)
    session = await current_session(request)
    if session is None:
        notice = SESSION_ENDED if "ended" in request.query else ""
        return render(request, "portal/key.html", title="Activate your license", notice=notice)
    return await _license_page(request, session)


async def enter_key(request: web.Request) -> web.StreamResponse:
    source_ip = client_ip(request)
    guard = request.config_dict[GUARD]
    wait = await guard.retry_after(source_ip)
    if wait is not None:
        await log_attempt(request, "rate_limited", "portal-guesses")
        return too_many(wait)
    fields = await read_form(request)
    key = fields.get("license_key", "").strip()
    if not key:
        return render(request, "portal/key.html", status=400, title="Activate your license",
                      errors=["Enter your license key."])  # fmt: skip
    license, reason, key_hash = await _genuine(request, key)
    if license is None:
        await log_attempt(request, "invalid", reason, key_hash=key_hash)
        await request.config_dict[appkeys.RATE_LIMITER].hit(UNKNOWN_KEY_PER_IP, source_ip)
        wait = await guard.guessed(source_ip)
        if wait is not None:
            return too_many(wait)
        return render(request, "portal/key.html", status=400, title="Activate your license",
                      errors=[NOT_ACCEPTED])  # fmt: skip
    sessions = request.config_dict[SESSIONS]
    await sessions.end(request.cookies.get(COOKIE))  # whatever came before
    token = await sessions.start(license.id, license_key_hash(key))
    await log_attempt(request, "active", "signed_in", license_id=license.id,
                      product=license.product.code)  # fmt: skip
    response = web.HTTPSeeOther("/activate")
    set_cookie(response, token)
    raise response


async def _genuine(request: web.Request, key: str) -> tuple[License | None, str, bytes | None]:
    """The license of a genuine key, or None with the reason for the attempt log. The same
    offline check and lookup as verification (a forged key never reaches the database)."""
    if len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        return None, "malformed_key", None
    verifier = _runtime(request).verifier
    check = verifier.lookup(key)
    if check.lookup is None:
        return None, check.rejected_reason or "bad_signature", check.key_hash
    license = await verifier.service.license_by_lookup(check.lookup)
    if license is None:
        return None, "unknown_key", check.key_hash
    return license, "", None


async def sign_out(request: web.Request) -> web.StreamResponse:
    await read_form(request)
    await request.config_dict[SESSIONS].end(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/activate")
    set_cookie(response, request.config_dict[SESSIONS].new_token())
    raise response


# -- the license page -------------------------------------------------------------------------


async def _license_page(
    request: web.Request,
    session: CustomerSession,
    *,
    status: int = 200,
    errors: list[str] | None = None,
    notice: str = "",
    form_domain: str = "",
) -> web.Response:
    service = _runtime(request).licenses
    try:
        license = await service.license_by_id(session.license_id)
    except NotFound:
        raise web.HTTPNotFound from None
    now = service.now()
    effective = lifecycle.effective_status(license.status, license.expires_at, now)
    product = license.product
    reissues_left = (
        None
        if product.max_reissues is None
        else max(0, product.max_reissues - license.reissue_count)
    )
    available_at = reissue_available_at(license)
    cooling = available_at is not None and available_at > now
    domains = license.bindings_of("domain")
    return render(
        request, "portal/license.html", status=status, title="Your license",
        session=session, license=license, product=product, status_text=effective.value,
        usable=effective in (Status.ACTIVE, Status.PENDING),
        valid_through=None if license.expires_at is None else date_text(license.expires_at - 1),
        domains=domains, seats_used=sum(not b.is_dev for b in domains),
        ips=license.bindings_of("ip"), directories=license.bindings_of("directory"),
        reissues_left=reissues_left, cooldown_until=utc_text(available_at) if cooling else "",
        cooldown_hours=product.reissue_cooldown_hours,
        by_mail=MAILER in request.config_dict, email_shown=_masked(license.licensee_email),
        errors=errors or [], notice=notice, form_domain=form_domain,
    )  # fmt: skip


async def _session_or_start(request: web.Request) -> CustomerSession:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/activate?ended=1")
    return session


def _masked(email: str) -> str:
    """o***@smith.example: enough for the customer to know which mailbox to look in."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if at and local else ""


# -- actions ----------------------------------------------------------------------------------


async def activate(request: web.Request) -> web.StreamResponse:
    fields = await read_form(request)
    session = await _session_or_start(request)
    raw = fields.get("domain", "").strip()
    if not raw:
        return await _license_page(request, session, status=400,
                                   errors=["Enter the domain to activate."])  # fmt: skip
    try:
        if len(raw) > MAX_DOMAIN_CHARS:
            raise InvalidHost("too long")
        domain = normalise_domain(raw)
    except InvalidHost:
        return await _license_page(
            request, session, status=400, form_domain=raw[:MAX_DOMAIN_CHARS],
            errors=["That is not a domain name: enter it as shop.example.com."],
        )  # fmt: skip
    verifier = _runtime(request).verifier
    license, verdict = await verifier.activate_domain(
        session.license_id, domain, actor=customer_actor(session.license_id)
    )
    code = license.product.code if license else ""
    if verdict.answer is not Answer.ACTIVE:
        await log_attempt(request, "invalid", verdict.reason, license_id=session.license_id,
                          product=code, domain=domain)  # fmt: skip
        text = _REASONS.get(verdict.reason, f"{domain} could not be activated.")
        return await _license_page(request, session, status=409, errors=[text],
                                   form_domain=domain)  # fmt: skip
    bound = license is not None and any(b.value == domain for b in license.bindings_of("domain"))
    if verdict.reason == "ok" and not bound:  # the product does not check domains
        notice = f"This product does not bind domains: {domain} may use it as it is."
    elif verdict.reason == "ok":
        notice = f"{domain} is bound to this license already."
    else:
        notice = f"{domain} is now bound to this license."
        if verdict.note:
            notice += f" It uses no seat: {verdict.note}."
    await log_attempt(request, "active", "bound" if verdict.reason != "ok" else "already_bound",
                      license_id=session.license_id, product=code, domain=domain)  # fmt: skip
    return await _license_page(request, session, notice=notice)


async def release(request: web.Request) -> web.StreamResponse:
    fields = await read_form(request)
    session = await _session_or_start(request)
    domain = fields.get("domain", "")
    license = await _runtime(request).licenses.license_by_id(session.license_id)
    if not any(b.value == domain for b in license.bindings_of("domain")):
        text = "That domain is not bound to this license."
        return await _license_page(request, session, status=409, errors=[text])
    if MAILER in request.config_dict:
        return await _ask_by_mail(request, session, license, "release", domain)
    return await _release(request, session, license, domain, within=None)


async def _release(request, session, license: License, domain: str, *, within) -> web.Response:
    try:
        await _runtime(request).licenses.release_binding(
            license.id, "domain", domain, actor=customer_actor(license.id), within=within
        )
    except NotFound:
        return await _done(request, session, 409, ["That domain is not bound to this license."])
    await log_attempt(request, "active", "released", license_id=license.id,
                      product=license.product.code, domain=domain)  # fmt: skip
    text = f"{domain} is released: its seat is free, and the next check from it is refused."
    return await _done(request, session, 200, notice=text)


async def reissue(request: web.Request) -> web.StreamResponse:
    await read_form(request)
    session = await _session_or_start(request)
    license = await _runtime(request).licenses.license_by_id(session.license_id)
    refusal = _reissue_refusal(license, _runtime(request).licenses.now())
    if refusal is not None:
        await log_attempt(request, "invalid", refusal[0], license_id=license.id,
                          product=license.product.code)  # fmt: skip
        return await _license_page(request, session, status=409, errors=[refusal[1]])
    if MAILER in request.config_dict:
        return await _ask_by_mail(request, session, license, "reissue", "")
    return await _reissue(request, session, license, within=None)


def _reissue_refusal(license: License, now: int) -> tuple[str, str] | None:
    """Why a reissue would be refused now (the reason, the sentence), or None."""
    status = lifecycle.effective_status(license.status, license.expires_at, now)
    if status not in (Status.ACTIVE, Status.PENDING):
        return status.value, _REASONS.get(status.value, "This license cannot be reissued.")
    limit = license.product.max_reissues
    if limit is not None and license.reissue_count >= limit:
        return "reissue_limit", (
            f"This license has been reissued {license.reissue_count} times, the most this "
            "product allows. Contact the vendor for more."
        )
    until = reissue_available_at(license)
    if until is not None and now < until:
        return "reissue_cooldown", _cooldown_text(until)
    return None


def _cooldown_text(until: int) -> str:
    return f"This license was reissued recently. You can reissue it again from {utc_text(until)}."


async def _reissue(request, session, license: License, *, within) -> web.Response:
    service = _runtime(request).licenses
    try:
        await service.customer_reissue(license.id, actor=customer_actor(license.id), within=within)
    except lifecycle.ReissueCooldown as refused:
        text = _cooldown_text(refused.until)
        return await _refused_reissue(request, session, license, "reissue_cooldown", text)
    except lifecycle.ReissueLimitReached:
        text = "This license has been reissued as often as this product allows."
        return await _refused_reissue(request, session, license, "reissue_limit", text)
    except lifecycle.TransitionRefused:
        text = "This license cannot be reissued now."
        return await _refused_reissue(request, session, license, "not_reissuable", text)
    await log_attempt(request, "active", "reissued", license_id=license.id,
                      product=license.product.code)  # fmt: skip
    text = (
        "Your license is reissued: every domain is released, and the next check from your "
        "site binds it again (or activate it here)."
    )
    return await _done(request, session, 200, notice=text)


async def _refused_reissue(request, session, license, reason: str, text: str) -> web.Response:
    await log_attempt(request, "invalid", reason, license_id=license.id,
                      product=license.product.code)  # fmt: skip
    return await _done(request, session, 409, [text])


async def _done(request, session, status: int, errors=None, notice: str = "") -> web.Response:
    """The license page after an action, or (a confirmation link opened without a session)
    a plain page saying what happened."""
    if session is not None:
        return await _license_page(request, session, status=status, errors=errors, notice=notice)
    if errors:
        return message(request, status, "Not done", *errors)
    return message(request, status, "Done", notice)


# -- e-mail confirmation ----------------------------------------------------------------------


async def _ask_by_mail(request, session, license: License, action: str, value: str):
    email = license.licensee_email
    if not email:
        return await _license_page(request, session, status=409, errors=[
            "This license has no e-mail address to confirm with. Contact the vendor."])  # fmt: skip
    service = _runtime(request).licenses
    token = await mail.new_link(service.db, license.id, action, value, service.now())
    link = f"{_settings(request).public_url}/activate/confirm/{quote(token)}"
    what = f"release the domain {value} from" if action == "release" else "reissue"
    text = (
        f"Someone asked on the license page to {what} your license for "
        f"{license.product.name}.\n\nTo confirm, open this link within 30 minutes and press "
        f"the button:\n\n{link}\n\nIf this was not you, ignore this e-mail: nothing changes. "
        "The link works once.\n"
    )
    try:
        await request.config_dict[MAILER].send(email, f"Confirm: {what} your license", text)
    except Exception as exc:
        log.warning("customer page: confirmation e-mail not sent (%s)", type(exc).__name__)
        await log_attempt(request, "invalid", "mail_failed", license_id=license.id,
                          product=license.product.code, domain=value)  # fmt: skip
        return await _license_page(request, session, status=503, errors=[
            "The confirmation e-mail could not be sent. Try again later."])  # fmt: skip
    await log_attempt(request, "active", f"confirm_{action}_sent", license_id=license.id,
                      product=license.product.code, domain=value)  # fmt: skip
    notice = (
        f"We sent a link to {_masked(email)}. Open it within 30 minutes to confirm: nothing "
        "changes until then."
    )
    return await _license_page(request, session, notice=notice)


async def confirm_page(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    service = _runtime(request).licenses
    row = await mail.pending_link(service.db, token, service.now())
    if row is None:
        return message(request, 404, "This link cannot be used",
                       "It was used already, has expired (links work for 30 minutes), or is "
                       "not a link we sent. Ask for a new one on the license page.")  # fmt: skip
    csrf = request.config_dict[SESSIONS].csrf_for(token)
    return render(request, "portal/confirm.html", title="Confirm", row=row, link_csrf=csrf,
                  action_path=f"/activate/confirm/{quote(token)}")  # fmt: skip


async def confirm(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    await read_form(request, csrf_seed=token)
    service = _runtime(request).licenses
    now = service.now()
    row = await mail.pending_link(service.db, token, now)
    if row is None:
        await log_attempt(request, "invalid", "link_not_usable")
        return message(request, 404, "This link cannot be used",
                       "It was used already or has expired.")  # fmt: skip
    license = await service.license_by_id(row["license_id"])
    session = await current_session(request)
    if session is not None and session.license_id != license.id:
        session = None  # another license's page: answer with a plain page instead
    spend = mail.spender(token, row, now)
    try:
        if row["action"] == "release":
            return await _release(request, session, license, row["value"], within=spend)
        return await _reissue(request, session, license, within=spend)
    except mail.LinkNotUsable:
        return message(request, 404, "This link cannot be used", "It was used already.")


# -- the local key for an install without internet --------------------------------------------


async def local_key(request: web.Request) -> web.StreamResponse:
    session = await _session_or_start(request)
    domain = request.query.get("domain", "")
    runtime = _runtime(request)
    license = await runtime.licenses.license_by_id(session.license_id)
    status = lifecycle.effective_status(license.status, license.expires_at, runtime.licenses.now())
    binding = next((b for b in license.bindings_of("domain") if b.value == domain), None)
    if binding is None or status is not Status.ACTIVE:
        await log_attempt(request, "invalid", "local_key_refused", license_id=license.id,
                          product=license.product.code, domain=domain[:253])  # fmt: skip
        text = "A local key is made for an active license and a domain bound to it."
        return await _license_page(request, session, status=409, errors=[text])
    ip = next((b.value for b in license.bindings_of("ip")), "")
    directory = next((b.value for b in license.bindings_of("directory")), "")
    facts = Facts(domain=domain, ip=ip, directory=directory, product=license.product.code)
    token = runtime.verifier.local_key_with(license, facts, session.lkh)
    await log_attempt(request, "active", "local_key", license_id=license.id,
                      product=license.product.code, domain=domain)  # fmt: skip
    filename = f"license-{license.product.code}-{domain}.jwt"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return web.Response(body=token.encode("ascii") + b"\n", content_type="application/jwt",
                        headers=headers)  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("", start, name="portal")
    router.add_get("/", start)
    router.add_post("", enter_key, name="portal_key")
    router.add_post("/", enter_key)
    router.add_post("/domains", activate, name="portal_activate")
    router.add_post("/release", release, name="portal_release")
    router.add_post("/reissue", reissue, name="portal_reissue")
    router.add_post("/sign-out", sign_out, name="portal_sign_out")
    router.add_get("/local-key", local_key, name="portal_local_key")
    router.add_get("/confirm/{token}", confirm_page, name="portal_confirm_page")
    router.add_post("/confirm/{token}", confirm, name="portal_confirm")

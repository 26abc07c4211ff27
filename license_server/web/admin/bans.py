"""The bans page (issue #12): list the banned domains and IPs / ranges, add one, lift one.

A ban is parsed by the same code as `run.py ban` (licensing/bans.py: the verifier's domain
normaliser, IP / CIDR rules, a plain-text reason), written through the service's single write
path with an audit row (staff/log_desk.py) and in force at the next check. Lifting posts the kind
and value, not a row id, so a lift names exactly what it ends. Bad input is a 400 page that keeps
what was typed, nothing written (ASVS 4.0.3 V5.1.3).
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web

from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.web.admin.attempts import LOG_DESK, cursor
from license_server.web.admin.base import client_ip, message, read_form, redirect, render, requires

KINDS = ("domain", "ip")
MAX_VALUE = 300  # a domain is at most 253 characters, an IPv6 range far less


def _form_value(fields: dict[str, str], name: str, limit: int) -> str:
    value = fields.get(name, "")
    if len(value) > limit:
        raise ValueError(f"{name}: at most {limit} characters")
    return value


async def _page(request: web.Request, staff: SignedIn, *, status: int = 200, form=None,
                errors=()) -> web.Response:  # fmt: skip
    if len(request.query.getall("before", [])) > 1:
        return message(request, 400, "Bad page", "before: given more than once")
    try:
        before = cursor(request.query.get("before", ""))
    except web.HTTPBadRequest as bad:
        return message(request, 400, "Bad page", bad.text or "")
    page = await request.config_dict[LOG_DESK].bans(staff, before)
    if form is None:  # a "ban this" link from the attempt log fills the form in
        form = {name: request.query.get(name, "")[:MAX_VALUE] for name in ("kind", "value")}
    form = defaultdict(str, form)
    role = staff.account.role
    return render(
        request, "admin/bans.html", status=status, title="Bans", rows=page.rows,
        next_before=page.next_before, form=form, kinds=KINDS, errors=list(errors),
        may_ban=rbac.has_permission(role, "ban:create"),
        may_lift=rbac.has_permission(role, "ban:delete"),
    )  # fmt: skip


@requires("ban:read")
async def bans(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _page(request, staff)


@requires("ban:create")
async def add_ban(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    form = {name: fields.get(name, "")[:MAX_VALUE] for name in ("kind", "value", "reason")}
    try:
        kind = fields.get("kind", "")
        if kind not in KINDS:
            raise ValueError("kind: a domain or an ip")
        value = _form_value(fields, "value", MAX_VALUE)
        if not value.strip():
            raise ValueError("value: the domain or IP to ban")
        reason = _form_value(fields, "reason", 2000)
        await request.config_dict[LOG_DESK].ban(staff, kind, value, reason, client_ip(request))
    except ValueError as exc:
        return await _page(request, staff, status=400, form=form, errors=[str(exc)])
    raise redirect("/admin/bans")  # the new ban heads the list


@requires("ban:delete")
async def lift_ban(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    kind = fields.get("kind", "")
    try:
        if kind not in KINDS:
            raise ValueError("kind: a domain or an ip")
        value = _form_value(fields, "value", MAX_VALUE)
        lifted = await request.config_dict[LOG_DESK].lift(staff, kind, value, client_ip(request))
    except ValueError as exc:
        return message(request, 400, "Not lifted", str(exc),
                       link={"href": "/admin/bans", "text": "Back to the bans"})  # fmt: skip
    if not lifted:
        return message(request, 409, "Not banned", f"{kind} {value} is not banned.",
                       link={"href": "/admin/bans", "text": "Back to the bans"})  # fmt: skip
    raise redirect("/admin/bans")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/bans", bans, name="admin_bans")
    router.add_post("/bans", add_ban, name="admin_ban_add")
    router.add_post("/bans/lift", lift_ban, name="admin_ban_lift")

"""Staff accounts: the list, invitations by one-time link, disable / enable, MFA reset."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from license_server.staff import rbac
from license_server.staff.accounts import PolicyRefused, SignedIn
from license_server.web.admin.base import CONSOLE, read_form, redirect, render, requires


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
    fields = await read_form(request)
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
    await read_form(request)
    account_id, action = int(request.match_info["id"]), request.match_info["action"]
    console = request.config_dict[CONSOLE]
    try:
        if action == "reset-mfa":
            await console.reset_second_factor(staff, account_id)
        else:
            await console.set_disabled(staff, account_id, action == "disable")
    except ValueError as exc:
        return await _staff_view(request, staff, 400, errors=[str(exc)])
    raise redirect("/admin/staff")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/staff", staff_page, name="admin_staff")
    router.add_post("/staff/invite", staff_invite, name="admin_staff_invite")
    router.add_post(
        "/staff/{id:[0-9]{1,19}}/{action:[a-z-]{1,20}}", staff_action, name="admin_staff_action"
    )

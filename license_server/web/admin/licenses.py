"""License pages: the list with search and keyset pages, a license with its actions, issuing."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from pydantic import ValidationError

from license_server.licensing.lifecycle import Action, TransitionRefused
from license_server.licensing.models import Status
from license_server.licensing.service import NotFound
from license_server.licensing.specs import LicenseSpec
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.console import ACTION_PERMISSIONS
from license_server.web.admin.base import (
    CONSOLE,
    form_problems,
    message,
    read_form,
    redirect,
    render,
    requires,
    split_list,
)  # fmt: skip


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
    await read_form(request)
    license_id = _license_id(request)
    action = Action(request.match_info["action"])
    try:
        await request.config_dict[CONSOLE].apply(staff, license_id, action)
    except NotFound:
        raise web.HTTPNotFound from None
    except TransitionRefused as refused:
        return message(request, 409, "Not possible now", str(refused),
                       link={"href": f"/admin/licenses/{license_id}", "text": "Back"})  # fmt: skip
    raise redirect(f"/admin/licenses/{license_id}")


@requires("license:reveal_key")
async def _reveal(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    license_id = _license_id(request)
    try:
        key = await request.config_dict[CONSOLE].reveal_key(staff, license_id)
    except NotFound:
        raise web.HTTPNotFound from None
    return await _license_view(request, staff, license_id, revealed=key)


@requires("license:create")
async def license_new(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    products_list = await console.products(staff)
    form: dict[str, str] = {}
    errors: list[str] = []
    if request.method == "POST":
        fields = await read_form(request)
        names = ("product", "licensee", "company", "email", "domains", "expires")
        form = {name: fields.get(name, "")[:2000] for name in names}
        try:
            spec = LicenseSpec(
                product=form["product"], licensee=form["licensee"], company=form["company"],
                email=form["email"], domains=split_list(form["domains"]),
                expires=form["expires"] or None,
            )  # fmt: skip
            license, key = await console.issue(staff, spec)
        except ValidationError as exc:
            errors = form_problems(exc)
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


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_route("*", "/licenses/new", license_new, name="admin_license_new")
    router.add_get("/licenses", licenses, name="admin_licenses")
    router.add_get("/licenses/{id:[0-9]{1,19}}", license_page, name="admin_license")
    router.add_post(
        "/licenses/{id:[0-9]{1,19}}/{action:[a-z_]{1,20}}", license_action, name="admin_action"
    )

"""License pages: the list with search, filters and keyset pages (staff/license_list.py), a
license with its actions, issuing one license or many at once; the CSV is license_export.py."""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from license_server.licensing.lifecycle import Action, TransitionRefused
from license_server.licensing.models import Status
from license_server.licensing.service import MAX_BULK_ISSUE, NotFound
from license_server.licensing.specs import LicenseSpec
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.console import ACTION_PERMISSIONS
from license_server.web.admin import license_export
from license_server.web.admin.alerts import ALERT_DESK, flagged_alerts
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
from license_server.web.admin.license_export import (
    BadQuery,
    issued_keys_csv,
    license_list,
    list_query,
)  # fmt: skip


def _license_id(request: web.Request) -> int:
    license_id = int(request.match_info["id"])
    if not 0 < license_id < 2**63:
        raise web.HTTPNotFound
    return license_id


@requires("license:read")
async def licenses(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    before_text = request.query.get("before", "")
    try:
        query = list_query(request)
        if before_text and not (before_text.isdigit() and len(before_text) <= 19):
            raise BadQuery("before: not a license id")
        page = await license_list(request).page(
            staff, query, before=int(before_text) if before_text else None
        )
    except ValueError as exc:  # BadQuery, or a filter naming what does not exist
        back = {"href": "/admin/licenses", "text": "Back to all licenses"}
        return message(request, 400, "Bad search", str(exc), link=back)
    products_list = await request.config_dict[CONSOLE].products(staff)
    params = query.params()
    return render(request, "admin/licenses.html", title="Licenses", rows=page.rows,
                  next_link=("/admin/licenses?" + urlencode({**params, "before": page.next_before})
                             if page.next_before else ""),
                  csv_link="/admin/licenses.csv" + ("?" + urlencode(params) if params else ""),
                  query=query, searched=page.searched, statuses=[s.value for s in Status],
                  products=products_list, filtered=bool(params),
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
    # The license's unresolved alerts; those an automatic action flagged are the marker.
    extra["alerts"] = flagged_alerts(await request.config_dict[ALERT_DESK].for_license(
        staff, license_id))  # fmt: skip
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
        form = {name: fields.get(name, "")[:2000] for name in _ISSUE_FIELDS}
        try:
            spec = _license_spec(form)
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


_ISSUE_FIELDS = ("product", "licensee", "company", "email", "domains", "expires")


def _license_spec(form: dict[str, str]) -> LicenseSpec:
    return LicenseSpec(
        product=form["product"], licensee=form["licensee"], company=form["company"],
        email=form["email"], domains=split_list(form["domains"]), expires=form["expires"] or None,
    )  # fmt: skip


@requires("license:create")
async def bulk_issue(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    """N licenses alike in one transaction; the answer is the only place their keys appear.

    The keys are listed on the page and offered as a CSV download built into the same page (a
    `data:` link), not as a second request: nothing on the server can show them again, so no
    later request, replayed or forged, can re-reveal them (ASVS 4.0.3 V8.3.4, V6.1.1). The page
    is `Cache-Control: no-store` like every admin page."""
    products_list = await request.config_dict[CONSOLE].products(staff)
    form: dict[str, str] = {"count": "10"}
    errors: list[str] = []
    if request.method == "POST":
        fields = await read_form(request)
        form = {name: fields.get(name, "")[:2000] for name in (*_ISSUE_FIELDS, "count")}
        count_text = form["count"].strip()
        try:
            count = int(count_text) if count_text.isdigit() and len(count_text) <= 5 else -1
            if not 1 <= count <= MAX_BULK_ISSUE:
                raise ValueError(f"count: a whole number from 1 to {MAX_BULK_ISSUE}")
            spec = _license_spec(form)
            issued = await license_list(request).issue_many(staff, spec, count)
        except ValidationError as exc:
            errors = form_problems(exc)
        except (NotFound, ValueError) as exc:
            errors = [str(exc)]
        else:
            return render(request, "admin/bulk_issued.html", title=f"{count} licenses issued",
                          issued=issued, spec=spec, csv_href=issued_keys_csv(spec, issued),
                          csv_name=f"licenses-{spec.product}-{len(issued)}.csv")  # fmt: skip
    return render(request, "admin/license_new.html", status=400 if errors else 200,
                  title="Issue licenses in bulk", products=products_list,
                  form=defaultdict(str, form), errors=errors, bulk=True,
                  max_count=MAX_BULK_ISSUE)  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_route("*", "/licenses/new", license_new, name="admin_license_new")
    router.add_route("*", "/licenses/bulk", bulk_issue, name="admin_license_bulk")
    router.add_get("/licenses", licenses, name="admin_licenses")
    router.add_get("/licenses.csv", license_export.export_csv, name="admin_licenses_csv")
    router.add_get("/licenses/{id:[0-9]{1,19}}", license_page, name="admin_license")
    router.add_post(
        "/licenses/{id:[0-9]{1,19}}/{action:[a-z_]{1,20}}", license_action, name="admin_action"
    )

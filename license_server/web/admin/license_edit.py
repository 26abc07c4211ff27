"""A license's changes in the admin: extend (a new expiry or none), edit its rules, reset its
reissue count, release one binding. Each is a small form on the license's page posting to its
own route; each goes through a LicenseService method (via staff/editing.py, which checks the
permission again), one write transaction with its audit row (before/after) and change-log row,
so the next verification, in any process, sees the change.

Input is checked before anything is written (ASVS 4.0.3 V5.1.3/V5.1.4): a date must be a real
calendar day in the future, the rules go through LicenseTerms (the same validators as
issuing), a binding is named by its kind and value. A bad form is a 400 page naming the
problem, with nothing written.
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from license_server import appkeys
from license_server.licensing.lifecycle import TransitionRefused
from license_server.licensing.service import NotFound
from license_server.licensing.specs import ExpiryDay, LicenseTerms, end_of_day_utc
from license_server.staff.accounts import SignedIn
from license_server.web.admin.base import (
    EDITING,
    form_problems,
    message,
    read_form,
    redirect,
    requires,
    split_list,
)  # fmt: skip
from license_server.web.admin.licenses import _license_id, _license_view

_DATE = TypeAdapter(ExpiryDay)  # the type LicenseSpec.expires has: one way to read a date
_RULE_FIELDS = ("licensee", "company", "seats", "notes", "domains", "ips", "directories")
_BINDING_KINDS = ("domain", "ip", "directory")


def _back(license_id: int) -> dict[str, str]:
    return {"href": f"/admin/licenses/{license_id}", "text": "Back to the license"}


async def _refused(request, staff: SignedIn, license_id: int, problems: list[str], **form):
    """The license's page again, status 400, the problems named and the form as sent."""
    return await _license_view(request, staff, license_id, status=400, errors=problems, **form)


def _expiry(fields: dict[str, str], now: int) -> int | None:
    """The new expiry from the form: the end of the chosen UTC day, or None for no expiry."""
    text = fields.get("expires", "").strip()
    no_expiry = fields.get("no_expiry", "") == "on"
    if no_expiry and text:
        raise ValueError("expires: give a date or tick 'no expiry', not both")
    if no_expiry:
        return None
    if not text:
        raise ValueError("expires: give the new last day (YYYY-MM-DD) or tick 'no expiry'")
    try:
        day = _DATE.validate_python(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        if problem["type"] == "value_error":  # a real date, too far ahead
            raise ValueError(f"expires: {problem['msg'].removeprefix('Value error, ')}") from None
        raise ValueError("expires: not a date; use YYYY-MM-DD, e.g. 2027-12-31") from None
    expires_at = end_of_day_utc(day)
    if expires_at <= now:
        raise ValueError("expires: the new expiry date must not be in the past")
    return expires_at


@requires("license:update")
async def extend(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    license_id = _license_id(request)
    editing = request.config_dict[EDITING]
    form = {"expiry_form": {"expires": fields.get("expires", "")[:40]}}
    try:
        expires_at = _expiry(fields, request.config_dict[appkeys.RUNTIME].licenses.now())
    except ValueError as exc:
        return await _refused(request, staff, license_id, [str(exc)], **form)
    try:
        await editing.renew(staff, license_id, expires_at)
    except NotFound:
        raise web.HTTPNotFound from None
    except TransitionRefused as refused:
        return message(request, 409, "Not possible now", str(refused), link=_back(license_id))
    raise redirect(f"/admin/licenses/{license_id}")


def _terms(form: dict[str, str]) -> LicenseTerms:
    return LicenseTerms(
        licensee=form["licensee"], company=form["company"],
        seats=form["seats"].strip() or None, notes=form["notes"],
        domains=split_list(form["domains"]), ips=split_list(form["ips"]),
        # Paths may hold commas: one directory per line.
        directories=tuple(line.strip() for line in form["directories"].splitlines()
                          if line.strip()),
    )  # fmt: skip


@requires("license:update")
async def edit_rules(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    license_id = _license_id(request)
    form = {name: fields.get(name, "") for name in _RULE_FIELDS}
    missing = [name for name in _RULE_FIELDS if name not in fields]
    if missing:  # never read as "clear it": a form without a field is not the page's form
        return await _refused(request, staff, license_id,
                              [f"form: incomplete (no {', '.join(missing)}); reload the page"],
                              rules_form=defaultdict(str, form))  # fmt: skip
    try:
        terms = _terms(form)
    except ValidationError as exc:
        return await _refused(request, staff, license_id, form_problems(exc),
                              rules_form=defaultdict(str, form))  # fmt: skip
    try:
        await request.config_dict[EDITING].edit_terms(staff, license_id, terms)
    except NotFound:
        raise web.HTTPNotFound from None
    raise redirect(f"/admin/licenses/{license_id}")


@requires("license:reissue")
async def reset_reissues(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    license_id = _license_id(request)
    try:
        await request.config_dict[EDITING].reset_reissues(staff, license_id)
    except NotFound:
        raise web.HTTPNotFound from None
    raise redirect(f"/admin/licenses/{license_id}")


@requires("binding:release")
async def release_binding(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    license_id = _license_id(request)
    kind, value = fields.get("kind", ""), fields.get("value", "")
    if kind not in _BINDING_KINDS or not value or len(value) > 1000:
        return await _refused(
            request, staff, license_id, ["binding: name a bound domain, IP or directory"]
        )
    try:
        await request.config_dict[EDITING].release_binding(staff, license_id, kind, value)
    except NotFound as exc:
        return message(request, 404, "Not found", str(exc), link=_back(license_id))
    raise redirect(f"/admin/licenses/{license_id}")


def add_routes(router: web.UrlDispatcher) -> None:
    # Two segments after the id: never taken for a lifecycle action (licenses.py's
    # /licenses/{id}/{action}), whichever area registers first.
    license = "/licenses/{id:[0-9]{1,19}}"
    router.add_post(f"{license}/edit/expiry", extend, name="admin_license_extend")
    router.add_post(f"{license}/edit/rules", edit_rules, name="admin_license_rules")
    router.add_post(f"{license}/edit/reissues", reset_reissues, name="admin_license_reissues")
    router.add_post(f"{license}/bindings/release", release_binding, name="admin_binding_release")

"""API keys (issue #13): the list, a form that makes one (its secret shown once), revoking.

Reading needs `api_key:read`, making one `api_key:create`, revoking `api_key:revoke` (only
administrators have them: a key acts on its own, outside any staff session). The service
(`staff/api_keys.py`) checks again and writes the audit row with the change.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from license_server.licensing.service import NotFound
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.api_keys import ApiKeyConsole, ApiKeys, NewApiKey
from license_server.web.admin.base import form_problems, read_form, redirect, render, requires
from license_server.web.api import API_KEYS

# The scopes offered as checkboxes: every resource's wildcard, then each permission.
SCOPE_CHOICES: tuple[str, ...] = (
    "*",
    *(f"{resource}:*" for resource in rbac.RESOURCES),
    *sorted(rbac.PERMISSIONS),
)


def _console(request: web.Request) -> ApiKeyConsole:
    keys: ApiKeys = request.config_dict[API_KEYS]
    return ApiKeyConsole(keys)


async def _keys_view(request, staff: SignedIn, status: int = 200, **extra):
    extra.setdefault("form", {"name": "", "expires": "", "scopes": ()})
    extra.setdefault("created", None)
    extra.setdefault("secret", "")
    return render(
        request, "admin/api_keys.html", status=status, title="API keys",
        keys=await _console(request).all(staff), now=request.config_dict[API_KEYS].now(),
        scope_choices=SCOPE_CHOICES,
        may_create=rbac.has_permission(staff.account.role, "api_key:create"),
        may_revoke=rbac.has_permission(staff.account.role, "api_key:revoke"), **extra,
    )  # fmt: skip


@requires("api_key:read")
async def api_keys(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _keys_view(request, staff)


@requires("api_key:create")
async def api_key_create(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields, scopes = await _read_create_form(request)
    form = {"name": fields.get("name", "")[:100], "expires": fields.get("expires", "")[:20],
            "scopes": scopes}  # fmt: skip
    try:
        new = NewApiKey(name=form["name"], scopes=scopes, expires=form["expires"] or None)
        key, secret = await _console(request).create(staff, new)
    except ValidationError as exc:
        return await _keys_view(request, staff, 400, errors=form_problems(exc), form=form)
    except ValueError as exc:
        return await _keys_view(request, staff, 400, errors=[str(exc)], form=form)
    return await _keys_view(request, staff, created=key, secret=secret)


async def _read_create_form(request: web.Request) -> tuple[dict[str, str], tuple[str, ...]]:
    """The form's fields and the ticked scopes: one checkbox per scope, named `scope.<scope>`
    (distinct names: `read_form` refuses a field given twice)."""
    fields = await read_form(request)
    scopes = tuple(
        name.removeprefix("scope.") for name, value in fields.items()
        if name.startswith("scope.") and value == "on"
    )  # fmt: skip
    return fields, scopes


@requires("api_key:revoke")
async def api_key_revoke(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    text = fields.get("id", "")
    if not text.isdigit() or not 0 < int(text) < 2**63:
        return await _keys_view(request, staff, 400, errors=["Choose a key to revoke."])
    try:
        await _console(request).revoke(staff, int(text))
    except NotFound:
        return await _keys_view(request, staff, 400, errors=["There is no such API key."])
    except ValueError as exc:
        return await _keys_view(request, staff, 409, errors=[str(exc)])
    raise redirect("/admin/api-keys")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api-keys", api_keys, name="admin_api_keys")
    router.add_post("/api-keys", api_key_create, name="admin_api_key_create")
    router.add_post("/api-keys/revoke", api_key_revoke, name="admin_api_key_revoke")

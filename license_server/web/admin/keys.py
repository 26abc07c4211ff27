"""The signing keys page: the staged rollout (add -> activate -> retire), as `run.py` does it.

Every key with its state and dates, the public key to copy into a module (PHP `public_keys`
entry, JWKS entry, PEM), and for each key that does not sign: how many licenses it signed and
which client versions still check in with them. Buttons add, activate and retire, each behind
its own permission (admin only) and audited; a refused change shows the key store's reason.

Input: the kid comes from a form field (never a path), checked against the kid pattern before
it is looked up; a repeated field or a bad form is a 400 page, an unknown kid a 404, a change
the key's state does not allow a 409 (ASVS 4.0.3 V5.1.3, V5.1.4). Private keys are never read
here: the service hands out public values only (V6.4.1).
"""

from __future__ import annotations

from aiohttp import web

from license_server.crypto.keystore import KeyRefused
from license_server.licensing.signing_keys import KID_PATTERN, SigningKeys, UnknownKey
from license_server.runtime import Runtime
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.key_console import KeyConsole
from license_server.web.admin.base import message, read_form, redirect, render, requires

KEY_CONSOLE = web.AppKey("key_console", KeyConsole)

# What the page says after a change (?done=...&kid=...): fixed texts, the kid checked.
_DONE = {
    "add": "Published a new key: ship its public key in your modules, then activate it.",
    "activate": "Activated: this key signs from now on. Other instances follow within a second.",
    "retire": "Retired: the key is no longer published.",
}


def set_up(app: web.Application, runtime: Runtime) -> None:
    """On the root application (staff_ctx): the key console on the runtime's key store."""
    settings = runtime.settings
    env_pem = settings.signing_keys.get_secret_value() if settings.signing_keys else None
    store = runtime.key_reloader.store if runtime.key_reloader is not None else None
    app[KEY_CONSOLE] = KeyConsole(SigningKeys(runtime.licenses, store, runtime.keyring, env_pem))


@requires("signing_key:read")
async def keys_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    console = request.config_dict[KEY_CONSOLE]
    views, usage = await console.keys(staff)
    notice = ""
    done, kid = request.query.get("done", ""), request.query.get("kid", "")
    if done in _DONE and KID_PATTERN.fullmatch(kid) and any(v.kid == kid for v in views):
        notice = f"{_DONE[done]} ({kid})"
    role = staff.account.role
    may = {action: rbac.has_permission(role, f"signing_key:{action}")
           for action in ("create", "activate", "retire")}  # fmt: skip
    return render(request, "admin/keys.html", title="Signing keys", keys=views, usage=usage,
                  may=may, from_environment=console.from_environment, notice=notice,
                  highlight=kid if notice else "")  # fmt: skip


@requires("signing_key:create")
async def key_add(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    try:
        key = await request.config_dict[KEY_CONSOLE].add(staff)
    except KeyRefused as refused:
        return _refused(request, 409, str(refused))
    raise redirect(f"/admin/keys?done=add&kid={key.kid}#key-{key.kid}")


@requires("signing_key:activate")
async def key_activate(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _change(request, staff, "activate")


@requires("signing_key:retire")
async def key_retire(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _change(request, staff, "retire")


async def _change(request: web.Request, staff: SignedIn, action: str) -> web.StreamResponse:
    fields = await read_form(request)
    kid = fields.get("kid", "")
    if not KID_PATTERN.fullmatch(kid):
        return _refused(request, 400, "That is not a signing key id.")
    console = request.config_dict[KEY_CONSOLE]
    try:
        record = await getattr(console, action)(staff, kid)
    except UnknownKey:
        return _refused(request, 404, "There is no signing key with that id.")
    except KeyRefused as refused:
        return _refused(request, 409, str(refused))
    raise redirect(f"/admin/keys?done={action}&kid={record.kid}#key-{record.kid}")


def _refused(request: web.Request, status: int, why: str) -> web.Response:
    title = "Not possible now" if status == 409 else "Not done"
    return message(request, status, title, why,
                   link={"href": "/admin/keys", "text": "Back to the signing keys"})  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/keys", keys_page, name="admin_keys")
    router.add_post("/keys", key_add, name="admin_key_add")
    router.add_post("/keys/activate", key_activate, name="admin_key_activate")
    router.add_post("/keys/retire", key_retire, name="admin_key_retire")

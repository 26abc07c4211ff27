"""The dashboard: where a signed-in member of staff lands."""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys
from license_server.staff.accounts import SignedIn
from license_server.web.admin.base import SIGNED_IN, STAFF, message, redirect, render


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
        raise redirect("/admin/login")
    if not staff.mfa_passed:
        raise redirect("/admin/mfa" if staff.account.totp_secret else "/admin/enrol")
    runtime = request.config_dict[appkeys.RUNTIME]
    counts = await runtime.licenses.count_by_status()
    return render(request, "admin/dashboard.html", title="Dashboard",
                  licenses=[(status.value, n) for status, n in counts.items()])  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("", index, name="admin")
    router.add_get("/", index)

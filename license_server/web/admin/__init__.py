"""The staff admin (issue #12), mounted at /admin as a sub-application.

One module per area registers its routes (`add_routes`); `base` holds what every page shares:
rendering with the security headers, the form reader with the Origin and CSRF checks, the
route-level permission check, the sign-in limiter. This module builds the sub-application and
the staff services it needs on the root application (`staff_ctx`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import jinja2
from aiohttp import web

from license_server import appkeys
from license_server.licensing.actors import SYSTEM
from license_server.staff.accounts import StaffAccounts
from license_server.staff.alert_desk import AlertDesk
from license_server.staff.console import Console
from license_server.staff.editing import Editing
from license_server.staff.log_desk import LogDesk
from license_server.staff.oversight import Oversight
from license_server.staff.sign_in_watch import SignInWatch
from license_server.web.admin import (
    alerts,
    api_keys,
    attempts,
    audit,
    bans,
    dashboard,
    keys,
    license_edit,
    licenses,
    products,
    security,
    sign_in,
    staff,
    webhooks,
)  # fmt: skip
from license_server.web.admin.base import (
    CONSOLE,
    COOKIE,
    EDITING,
    FIRST_RUN_TOKEN,
    MAX_FORM_BYTES,
    OVERSIGHT,
    PAGES,
    SIGN_IN_LIMITER,
    STAFF,
    TEMPLATES,
    SignInLimiter,
    admin_middleware,
    date_text,
    datetime_text,
    may,
)  # fmt: skip
from license_server.web.alert_wiring import ALERT_ACTIONS, IP_BLOCKS

__all__ = [
    "CONSOLE",
    "COOKIE",
    "FIRST_RUN_TOKEN",
    "STAFF",
    "admin_app",
    "first_run_link",
    "staff_ctx",
]  # fmt: skip

SIGN_IN_WATCH = web.AppKey("sign_in_watch", SignInWatch)

# Each area's module; its `add_routes(router)` adds its pages.
AREAS = (dashboard, sign_in, staff, products, licenses, license_edit, attempts, bans, audit,
         security, keys, api_keys, webhooks, alerts)  # fmt: skip


async def staff_ctx(app: web.Application) -> AsyncIterator[None]:
    """On the root application, after the runtime: the staff accounts and the sign-in limiter;
    with no staff account yet, a one-time set-up token (issue #12, first run), which
    `run.py serve` prints as a link once the server listens (`first_run_link`)."""
    runtime = app[appkeys.RUNTIME]
    service = runtime.licenses
    settings = runtime.settings
    app[STAFF] = StaffAccounts(
        runtime.db, service.write, service.cipher, service.hasher, runtime.once,
        password_max_age_days=settings.staff.password_max_age_days,
    )  # fmt: skip
    app[SIGN_IN_LIMITER] = SignInLimiter(settings.rate_limit.storage_uri, app[IP_BLOCKS])
    app[CONSOLE] = Console(service, app[STAFF])
    app[attempts.LOG_DESK] = LogDesk(service, runtime.bans, app[STAFF])
    app[OVERSIGHT] = Oversight(runtime.db, service.audit, app[STAFF])
    app[EDITING] = Editing(service)
    app[alerts.ALERT_DESK] = AlertDesk(service)
    watch = SignInWatch(settings.staff, runtime.alerts, app[ALERT_ACTIONS], app[IP_BLOCKS],
                        clock=service.clock)  # fmt: skip
    await watch.rebuild(runtime.db)
    app[STAFF].events.observe(watch.observe)
    app[SIGN_IN_WATCH] = watch
    keys.set_up(app, runtime)
    dashboard.set_up(app, runtime)
    if app[appkeys.MAINTENANCE] and await app[STAFF].needs_first_admin():
        app[FIRST_RUN_TOKEN] = await app[STAFF].first_admin_link(SYSTEM)
    yield
    app[SIGN_IN_LIMITER].close()


def first_run_link(app: web.Application, base_url: str) -> str | None:
    """The line to print when there is no staff account yet, or None."""
    token = app.get(FIRST_RUN_TOKEN)
    if token is None:
        return None
    return (
        "No staff account yet: create the first administrator at "
        f"{base_url}/admin/setup/{quote(token)} (valid for one hour, once)"
    )


def admin_app() -> web.Application:
    admin = web.Application(middlewares=[admin_middleware], client_max_size=MAX_FORM_BYTES)
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    pages.filters["date"] = date_text
    pages.filters["datetime"] = datetime_text
    pages.globals["may"] = may
    admin[PAGES] = pages
    for area in AREAS:
        area.add_routes(admin.router)
    return admin

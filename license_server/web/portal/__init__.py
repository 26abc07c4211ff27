"""The customer page (issue #14), mounted at /activate as a sub-application.

A customer enters a license key (POST, never in a URL) and, in a short server-side session
(sessions.py), sees that license and manages it: activate a domain, release one, reissue within
the product's limit and cooldown, download a signed local key for an install without internet.
With `[portal] smtp_host` set, a release or reissue waits for an e-mailed link (mail.py).
Key guessing is limited per IP (guard.py). `views` has the pages, `base` what they share.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import jinja2
from aiohttp import web

from license_server import appkeys
from license_server.web.admin.base import TEMPLATES
from license_server.web.portal import views
from license_server.web.portal.base import (
    GUARD,
    MAILER,
    MAX_FORM_BYTES,
    PAGES,
    SESSIONS,
    date_text,
    portal_middleware,
    utc_text,
)
from license_server.web.portal.guard import GuessGuard
from license_server.web.portal.mail import Mailer
from license_server.web.portal.sessions import CustomerSessions

__all__ = ["portal_app", "portal_ctx"]


async def portal_ctx(app: web.Application) -> AsyncIterator[None]:
    """On the root application, after the runtime: sessions, the guessing guard, the mailer."""
    runtime = app[appkeys.RUNTIME]
    settings = runtime.settings
    portal = settings.portal
    app[SESSIONS] = CustomerSessions(
        runtime.db, runtime.licenses.hasher, lambda: runtime.licenses.clock(),
        idle_seconds=portal.session_idle_minutes * 60,
        max_seconds=portal.session_max_hours * 3600,
    )  # fmt: skip
    app[GUARD] = GuessGuard(settings.rate_limit.storage_uri, portal.guesses_per_hour)
    if portal.confirms_by_mail:
        app[MAILER] = Mailer(portal)
    yield
    app[GUARD].close()


def portal_app() -> web.Application:
    portal = web.Application(middlewares=[portal_middleware], client_max_size=MAX_FORM_BYTES)
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    pages.filters["date"] = date_text
    pages.filters["utc"] = utc_text
    portal[PAGES] = pages
    views.add_routes(portal.router)
    return portal

"""Every object shared through the aiohttp application, as a typed `web.AppKey`."""

from __future__ import annotations

from aiohttp import web

from license_server.runtime import Runtime
from license_server.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)

"""Every object shared through the aiohttp application, as a typed `web.AppKey`."""

from __future__ import annotations

from aiohttp import web

from license_server.anomaly.engine import AnomalyEngine
from license_server.licensing.attempt_log import AttemptLog
from license_server.runtime import Runtime
from license_server.settings import Settings
from license_server.web.client_ip import ClientIpResolver
from license_server.web.rate_limit import RateLimiter

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
ATTEMPT_LOG = web.AppKey("attempt_log", AttemptLog)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
CLIENT_IP = web.AppKey("client_ip", ClientIpResolver)
# False in all but one of several worker processes: they skip the maintenance tasks.
MAINTENANCE = web.AppKey("maintenance", bool)
# The anomaly detectors (absent when anomaly.enabled is false).
ANOMALY = web.AppKey("anomaly", AnomalyEngine)

"""Every object shared through the aiohttp application, as a typed `web.AppKey`."""

from __future__ import annotations

from aiohttp import web

from license_server.anomaly.engine import AnomalyEngine
from license_server.crypto.signing import SigningKey
from license_server.licensing.attempt_log import AttemptLog
from license_server.runtime import Runtime
from license_server.settings import Settings
from license_server.staff.webhooks import WebhookEndpoints
from license_server.web.client_ip import ClientIpResolver
from license_server.web.metrics import Metrics
from license_server.web.rate_limit import RateLimiter
from license_server.web.tarpit import Tarpit
from license_server.webhooks.delivery import Deliverer

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
ATTEMPT_LOG = web.AppKey("attempt_log", AttemptLog)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
CLIENT_IP = web.AppKey("client_ip", ClientIpResolver)
METRICS = web.AppKey("metrics", Metrics)
# Holds every rate limit's refusal (429) before it is sent (web/tarpit.py).
TARPIT = web.AppKey("tarpit", Tarpit)
# False in all but one of several worker processes: they skip the maintenance tasks.
MAINTENANCE = web.AppKey("maintenance", bool)
# Webhooks (issue #14): the signing key, the outbox's sender, the endpoints service.
WEBHOOK_KEY = web.AppKey("webhook_key", SigningKey)
DELIVERER = web.AppKey("webhook_deliverer", Deliverer)
WEBHOOK_ENDPOINTS = web.AppKey("webhook_endpoints", WebhookEndpoints)
# The anomaly detectors (absent when anomaly.enabled is false).
ANOMALY = web.AppKey("anomaly", AnomalyEngine)

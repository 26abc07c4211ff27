"""`create_app(settings)`: builds the aiohttp application. No global state.

One middleware (`web.middlewares.answer_middleware`) turns every failure into a response, adds
the security headers and, last, signs verify answers over their final body. Resources open in
`cleanup_ctx` order — keys and database, the signing-key reloader, then the attempt log
writer and the rate limiter — and close in reverse, so the attempt log flushes its last batch
while the database is still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from license_server import appkeys
from license_server.anomaly.engine import AnomalyEngine
from license_server.licensing.attempt_hours import fold_closed_hours
from license_server.licensing.attempt_log import AttemptLog
from license_server.licensing.expiry import expire_lapsed
from license_server.licensing.webhook_events import CHANGE_EVENTS
from license_server.runtime import open_runtime
from license_server.settings import Settings
from license_server.staff import security_events
from license_server.staff.webhooks import WebhookEndpoints
from license_server.web import admin, api, portal
from license_server.web.alert_wiring import alert_actions_ctx
from license_server.web.client_ip import ClientIpResolver
from license_server.web.metrics import Metrics
from license_server.web.metrics_endpoint import WORKER, metrics_ctx
from license_server.web.middlewares import answer_middleware
from license_server.web.rate_limit import NoRateLimiter, RateLimiter
from license_server.web.routes import setup_routes
from license_server.web.tarpit import Tarpit
from license_server.webhooks.delivery import Deliverer
from license_server.webhooks.signing import load_webhook_key

log = logging.getLogger(__name__)

# Verification requests are small; a large body is refused early (413) instead of parsed.
MAX_REQUEST_BYTES = 64 * 1024
# How often a running server looks for signing-key changes made by the CLI (a stat, off-loop).
KEY_RELOAD_SECONDS = 1.0
# How often the maintenance process folds closed hours for the dashboard.
FOLD_HOURS_SECONDS = 60.0


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_runtime(app[appkeys.SETTINGS]) as runtime:
        app[appkeys.RUNTIME] = runtime
        yield


async def _key_reload_ctx(app: web.Application) -> AsyncIterator[None]:
    # `run.py rotate-keys`, `--activate` and `retire` run in other processes: pick their
    # changes up within about a second, without a restart (the verifier also looks on demand).
    reloader = app[appkeys.RUNTIME].key_reloader
    task = None
    if reloader is not None:
        task = asyncio.create_task(reloader.run(KEY_RELOAD_SECONDS), name="signing-key-reloader")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _attempt_log_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS].attempt_log
    attempt_log = AttemptLog(
        app[appkeys.RUNTIME].db,
        max_rows=settings.batch_max_rows,
        max_delay=settings.batch_max_delay_ms / 1000,
    )
    attempt_log.start()
    app[appkeys.ATTEMPT_LOG] = attempt_log
    tasks, stop = [], asyncio.Event()
    if app[appkeys.MAINTENANCE]:
        tasks.append(
            asyncio.create_task(_prune_forever(app, attempt_log, stop), name="attempt-log-pruner")
        )
        tasks.append(asyncio.create_task(_fold_hours_forever(app, stop), name="attempt-hours"))
    yield
    # Asked to stop, not cancelled: a statement cancelled mid-flight must first be
    # cancelled on the database server (PostgreSQL), which can hold up shutdown; the
    # tasks stop between two of their short transactions instead.
    stop.set()
    for task in tasks:
        await task
    await attempt_log.stop()


async def _prune_forever(
    app: web.Application, attempt_log: AttemptLog, stop: asyncio.Event
) -> None:
    settings = app[appkeys.SETTINGS].attempt_log
    while not stop.is_set():
        try:
            deleted = await attempt_log.prune(settings.retention_days, settings.rollup, stop=stop)
            if deleted:
                log.info("attempt log: %d attempts past retention rolled up and pruned", deleted)
            staff = app[appkeys.SETTINGS].staff
            deleted = await security_events.prune(
                app[appkeys.RUNTIME].db, staff.security_event_retention_days
            )
            if deleted:
                log.info("security events: %d past retention pruned", deleted)
        except Exception:
            log.exception("attempt log pruning failed; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.prune_interval_seconds)


async def _fold_hours_forever(app: web.Application, stop: asyncio.Event) -> None:
    """The dashboard's hourly counts (licensing/attempt_hours.py), folded once a minute.

    The first fold is a minute after start, not at once: the dashboard reads hours not folded
    yet from the log, so nothing is missing meanwhile, and a test that folds by its own
    settable clock never races this task (which had marked hours of the real clock folded)."""
    runtime = app[appkeys.RUNTIME]
    retention = app[appkeys.SETTINGS].attempt_log.retention_days
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FOLD_HOURS_SECONDS)
        if stop.is_set():
            return
        try:
            # The service's clock, the one the dashboard reads by.
            await fold_closed_hours(runtime.db, runtime.licenses.now(), retention)
        except Exception:
            log.exception("folding hourly attempt counts failed; will retry")


async def _anomaly_ctx(app: web.Application) -> AsyncIterator[None]:
    """The anomaly detectors (license_server/anomaly/): fed by the attempt log, their alerts
    written by one background task, which first rebuilds them from the log while the server
    already answers (batches committed meanwhile are held and fed after the replay)."""
    settings = app[appkeys.SETTINGS].anomaly
    if not settings.enabled:
        yield
        return
    runtime = app[appkeys.RUNTIME]
    engine = AnomalyEngine(settings, runtime.db, runtime.alerts, runtime.licenses.clock)
    engine.hold()
    app[appkeys.ANOMALY] = engine
    app[appkeys.ATTEMPT_LOG].observe(engine.observe)
    runtime.changes.subscribe(engine.on_change)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop), name="anomaly-alerts")
    yield
    stop.set()
    engine.wake()
    await task


async def _rate_limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS].rate_limit
    if settings.enabled:
        app[appkeys.RATE_LIMITER] = RateLimiter(settings)
    else:
        log.warning("rate limiting is OFF (rate_limit.enabled = false): use only when trusted")
        app[appkeys.RATE_LIMITER] = NoRateLimiter()
    yield
    app[appkeys.RATE_LIMITER].close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Webhook deliveries (webhooks/delivery.py): a task that sends the outbox, woken after a
    commit that wrote an event; in the maintenance process also the expiry sweep (which sends
    license.expired) and the pruning of delivered rows."""
    runtime = app[appkeys.RUNTIME]
    settings = app[appkeys.SETTINGS]
    key = load_webhook_key(settings.keys_dir)
    deliverer = Deliverer(runtime.db, settings.webhooks, key, alerts=runtime.alerts)
    app[appkeys.WEBHOOK_KEY] = key
    app[appkeys.DELIVERER] = deliverer
    app[appkeys.WEBHOOK_ENDPOINTS] = WebhookEndpoints(
        runtime.licenses, settings.webhooks, deliverer.wake
    )
    runtime.changes.subscribe(
        lambda change: deliverer.wake() if change.kind in CHANGE_EVENTS else None
    )
    runtime.alerts.subscribe(lambda signal, raised: deliverer.wake() if raised.new else None)
    await deliverer.open()
    stop = asyncio.Event()
    tasks = []
    if settings.webhooks.send:
        tasks.append(asyncio.create_task(deliverer.run(stop), name="webhook-deliveries"))
    if app[appkeys.MAINTENANCE]:
        tasks.append(asyncio.create_task(_webhook_upkeep_forever(app, stop), name="webhook-upkeep"))
    yield
    stop.set()
    deliverer.wake()
    for task in tasks:
        await task
    await deliverer.close()


async def _webhook_upkeep_forever(app: web.Application, stop: asyncio.Event) -> None:
    """Every `expiry_sweep_seconds` (the first after one interval, as the hourly fold): mark
    lapsed licenses expired, and prune delivered webhook rows once an hour."""
    runtime = app[appkeys.RUNTIME]
    deliverer = app[appkeys.DELIVERER]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), app[appkeys.SETTINGS].webhooks.expiry_sweep_seconds)
        if stop.is_set():
            return
        try:
            expired = await expire_lapsed(runtime.licenses)
            if expired:
                log.info("expiry sweep: %d licenses past their date marked expired", expired)
            pruned = await deliverer.prune_if_due()
            if pruned:
                log.info("webhooks: %d delivered deliveries past retention pruned", pruned)
        except Exception:
            log.exception("webhook upkeep failed; will retry")


def create_app(
    settings: Settings, *, maintenance: bool = True, worker: int | None = None
) -> web.Application:
    """`maintenance=False` for all but one of several worker processes (`workers.py`);
    `worker`: this process's index among them (their metrics are served together)."""
    app = web.Application(
        middlewares=[answer_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.MAINTENANCE] = maintenance
    app[appkeys.CLIENT_IP] = ClientIpResolver(settings.proxy.trusted_proxies)
    app[appkeys.TARPIT] = Tarpit(
        settings.rate_limit.refusal_hold_seconds, settings.rate_limit.refusals_held
    )
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(_key_reload_ctx)
    app.cleanup_ctx.append(_attempt_log_ctx)
    app.cleanup_ctx.append(_anomaly_ctx)
    app.cleanup_ctx.append(_rate_limiter_ctx)
    app.cleanup_ctx.append(alert_actions_ctx)  # IP blocks, automatic actions; before staff
    app.cleanup_ctx.append(admin.staff_ctx)
    app.cleanup_ctx.append(api.api_ctx)
    app[appkeys.METRICS] = Metrics()  # counted by the middleware; GET /metrics shows them
    if worker is not None:
        app[WORKER] = worker
    app.cleanup_ctx.append(metrics_ctx)
    app.cleanup_ctx.append(portal.portal_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    setup_routes(app)
    app.add_subapp("/admin", admin.admin_app())
    # The vendor API; /api/v1/verify (above) is more specific and is matched first.
    app.add_subapp("/api", api.api_app())
    # The customer page (issue #14).
    app.add_subapp("/activate", portal.portal_app())
    return app

"""`GET /metrics`: who may read it, and the metrics of every worker process.

Access (ASVS 4.0.3 V4.1.1 access enforced on the server, V4.1.3 least privilege, V14.3.3 no
version details to the world; `build_info` names the version): a scrape is answered when the
client's address is in `[metrics] allow_from` (loopback by default), taken through the same
trusted-proxy rule as everything else (web/client_ip.py: X-Forwarded-For only from a
configured proxy, so a header cannot make a remote client look local), or when it carries
`Authorization: Bearer <token>` (RFC 6750) with the token from LICENSE_SERVER_METRICS_TOKEN
(environment only, V2.10.4). The token is compared in constant time over SHA-256 digests, so
neither its content nor its length leaks through timing (V2.10.x / CWE-208).

Anyone else gets the same 404 problem document as a path no route has, not a 403: the server's
internals are not advertised to a scanner, and a token guess learns nothing from the status.
A misconfigured scraper shows up as 404s in its target list; README "Monitoring" says so.

Workers (`workers = N`): the kernel hands a scrape to any one worker (SO_REUSEPORT). Each
worker writes its own exposition to `<directory>/worker-<index>.prom` every `snapshot_seconds`
(a temporary file renamed into place), and the worker that answers serves its own live metrics
plus the others' files, every series with a `worker="<index>"` label. Chosen over
prometheus-client's multiprocess mode because that mode writes every increment to a shared
mmap file under a lock (on the verify path), needs the environment set before the library is
imported, and has no callback gauges (the queue depth and cache lookups here are read at scrape
time). The price: another worker's series are up to `snapshot_seconds` old. A restarted worker
starts its counters at zero under the same label, which `rate()` takes as a counter reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from license_server import appkeys
from license_server.settings import MetricsSettings
from license_server.web.admin.base import SIGN_IN_LIMITER
from license_server.web.client_ip import ClientIpResolver
from license_server.web.metrics import Metrics

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "worker-"
SNAPSHOT_SUFFIX = ".prom"
WORKER = web.AppKey("metrics_worker", int)  # this process's worker index (workers > 1)


class MetricsAccess:
    def __init__(self, settings: MetricsSettings, client_ip: ClientIpResolver) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.allow_from)
        token = settings.token.get_secret_value() if settings.token else None
        self._token = hashlib.sha256(token.encode()).digest() if token else None
        self._client_ip = client_ip

    def allows(self, request: web.Request) -> bool:
        if self._token is not None:
            scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                offered = hashlib.sha256(credentials.strip().encode("utf-8", "replace")).digest()
                if hmac.compare_digest(offered, self._token):
                    return True
        try:
            address = ipaddress.ip_address(self._client_ip(request))
        except ValueError:
            return False
        return any(address in network for network in self._networks)


METRICS_ACCESS = web.AppKey("metrics_access", MetricsAccess)
SCRAPED = web.AppKey("metrics_scraped", CollectorRegistry)


async def metrics_page(request: web.Request) -> web.Response:
    if not request.app[METRICS_ACCESS].allows(request):
        raise web.HTTPNotFound()  # as for a path no route has (see the module docstring)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[SCRAPED])
    return web.Response(body=body, headers={"Content-Type": content_type})


class WorkerSnapshots:
    """This worker's metrics written for the others, and theirs read back (a collector)."""

    def __init__(self, metrics: Metrics, directory: Path, index: int) -> None:
        self._metrics = metrics
        self._directory = directory
        self._index = str(index)

    def write(self) -> None:
        text = generate_latest(self._metrics.registry)
        name = f"{SNAPSHOT_PREFIX}{self._index}{SNAPSHOT_SUFFIX}"
        temporary = self._directory / f".{name}.{os.getpid()}.tmp"
        temporary.write_bytes(text)
        os.replace(temporary, self._directory / name)  # readers see the old or the new file

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        own = generate_latest(self._metrics.registry).decode()  # the same shape as the files
        _merge(families, own, self._index)
        for path in sorted(self._directory.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}")):
            index = path.name[len(SNAPSHOT_PREFIX) : -len(SNAPSHOT_SUFFIX)]
            if index == self._index or not index.isdigit():
                continue
            try:
                _merge(families, path.read_text("utf-8"), index)
            except (OSError, ValueError) as exc:  # a worker mid-start, or a damaged file
                log.warning("metrics of worker %s not readable: %s", index, exc)
        return list(families.values())


def _merge(families: dict[str, Metric], text: str, worker: str) -> None:
    for family in text_string_to_metric_families(text):
        merged = families.get(family.name)
        if merged is None:
            merged = families[family.name] = Metric(
                family.name, family.documentation, family.type, family.unit
            )
        merged.samples.extend(
            Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
            for s in family.samples
        )


def worker_snapshots(app: web.Application) -> WorkerSnapshots | None:
    """For a worker of several: its snapshots in the shared directory (None: one process)."""
    index = app.get(WORKER)
    if index is None:
        return None
    # The supervisor sets it for its workers (LICENSE_SERVER_METRICS_DIRECTORY, workers.py).
    configured = app[appkeys.SETTINGS].metrics.directory
    if not configured or not Path(configured).is_dir():
        log.warning("metrics: no directory shared by the workers; each serves its own only")
        return None
    return WorkerSnapshots(app[appkeys.METRICS], Path(configured), index)


async def snapshots_forever(snapshots: WorkerSnapshots, every: float) -> None:
    while True:
        try:
            await asyncio.to_thread(snapshots.write)
        except OSError as exc:
            log.warning("metrics snapshot not written: %s", exc)
        await asyncio.sleep(every)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the runtime, attempt log, rate limiter and staff: connect what is counted."""
    metrics, runtime = app[appkeys.METRICS], app[appkeys.RUNTIME]
    attempt_log = app[appkeys.ATTEMPT_LOG]
    attempt_log.observe(metrics.attempts_committed)
    metrics.watch_pending(lambda: attempt_log.pending)
    runtime.alerts.subscribe(metrics.alert_raised)
    metrics.watch_caches(runtime.verifier.cache_stats)
    engine = app.get(appkeys.ANOMALY)
    if engine is not None:  # after _anomaly_ctx; absent when anomaly.enabled = false
        metrics.watch_anomaly(engine.stats)
    metrics.watch_tarpit(app[appkeys.TARPIT])
    for limiter in (app[appkeys.RATE_LIMITER], app.get(SIGN_IN_LIMITER)):
        if limiter is not None:
            metrics.watch_refusals(lambda limiter=limiter: limiter.refused)
    app[METRICS_ACCESS] = MetricsAccess(app[appkeys.SETTINGS].metrics, app[appkeys.CLIENT_IP])
    snapshots, task = worker_snapshots(app), None
    if snapshots is None:
        app[SCRAPED] = metrics.registry
    else:
        app[SCRAPED] = CollectorRegistry()
        app[SCRAPED].register(snapshots)
        every = app[appkeys.SETTINGS].metrics.snapshot_seconds
        task = asyncio.create_task(snapshots_forever(snapshots, every), name="metrics-snapshots")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

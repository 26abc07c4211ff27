"""Prometheus metrics: what the server counts, and `GET /metrics` in the text format.

Names (all `license_server_`-prefixed; README "Monitoring" lists them):
- `http_requests_total{endpoint,method,status}`: `endpoint` is the route's template
  (`/admin/licenses/{license_id}`), never the raw path, and `unmatched` for every path no route
  has, so a scanner's odd paths cannot add series (bounded label cardinality);
- `http_request_duration_seconds{area}`: verify, whmcs, admin, api, other;
- `verifications_total{endpoint,result,reason}`: from the attempt log's committed batches;
- `attempt_log_batch_size` (histogram) and `attempt_log_pending` (rows waiting, read at scrape);
- `rate_limited_total{limit}`: refusals per policy (verify and API limits, staff sign-in);
- `throttled_refusals_total{sent}` and `throttled_refusals_holding`: every rate limit's 429,
  held by the tarpit (web/tarpit.py) before it was sent, or sent at once when it was full;
- `alerts_raised_total{detector,severity}`: every raise, new or bumped (a `runtime.alerts`
  listener);
- `cache_lookups_total{cache,result}`: hits and misses of the verifier's caches;
- `anomaly_*`: the detectors' engine (license_server/anomaly/engine.py `stats`): attempts
  observed, findings dropped because the queue was full, attempts dropped while held during
  the start-up rebuild, findings queued, alerts raised by the engine per detector, entries
  per bounded map (`anomaly_tracked_entries{detector,map}`) beside its cap and its evictions,
  and the last rebuild's duration and rows (and whether one is running);
- `build_info{version,python}` and the usual `process_*` metrics.

Cost on the verify path (issue #16 counts every microsecond): the request counter and the
latency histogram are counted in the one existing middleware, into plain numbers bound once
per (route, status) and kept in a dict; verification results are counted from committed
batches, off the request; rate-limit refusals, cache lookups and the queue depth are plain
integers the server keeps anyway. All of them become metric families only when scraped
(`_Counts`, `_Histograms`): prometheus_client's own Counter and Histogram take a lock per
increment (for threads this server does not count from), which made the metrics ~5 us of a
check. Label values that come from data (reasons, detectors) are capped: past
`MAX_LABEL_SETS` distinct sets a metric counts under "other".

Workers (`workers = N`): see `metrics_workers.py`.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Info, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from license_server.licensing.alerts import AlertSignal, RaisedAlert
from license_server.licensing.attempt_log import Attempt
from license_server.web.tarpit import Tarpit

PREFIX = "license_server_"
MAX_LABEL_SETS = 200  # per metric, for label values taken from data
OTHER = "other"
# Seconds: a verify answer takes a few milliseconds; an admin page up to a second or so.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def area_of(endpoint: str) -> str:
    """The latency histogram's `area` of a route template."""
    if endpoint == "/api/v1/verify":
        return "verify"
    if endpoint == "/modules/servers/licensing/verify.php":
        return "whmcs"
    if endpoint.startswith("/admin"):
        return "admin"
    if endpoint.startswith("/api/"):
        return "api"
    return OTHER


class Metrics:
    """One application's metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._requests = _Counts(
            f"{PREFIX}http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("endpoint", "method", "status"),
        )
        self._latency = _Histograms(
            f"{PREFIX}http_request_duration_seconds",
            "Time from the request reaching the app to its answer, by area.",
            ("area",),
            LATENCY_BUCKETS,
        )
        self._verifications = _Counts(
            f"{PREFIX}verifications",
            "Verification attempts logged, by endpoint (native, whmcs), result and reason.",
            ("endpoint", "result", "reason"),
        )
        self._batch_sizes = _Histograms(
            f"{PREFIX}attempt_log_batch_size",
            "Attempts committed per attempt-log transaction (group commit).",
            (),
            BATCH_BUCKETS,
        )
        self._batch_size = self._batch_sizes.child(())
        registry.register(
            _Families((self._requests, self._latency, self._verifications, self._batch_sizes))
        )
        self._alerts = Counter(
            f"{PREFIX}alerts_raised",
            "Alerts raised (opened or bumped), by detector and severity.",
            ["detector", "severity"],
            registry=registry,
        )
        Info(f"{PREFIX}build", "Version of the server and of Python.", registry=registry).info(
            {"version": _version(), "python": platform.python_version()}
        )
        ProcessCollector(registry=registry)
        self._sources = _ScrapeTimeValues()
        registry.register(self._sources)
        self._per_route: dict[tuple[object, int], tuple[_Count, _Buckets]] = {}
        self._per_attempt: dict[tuple[str, str, str], _Count] = {}
        self._per_alert: dict[tuple[str, str], Callable[[], None]] = {}

    # -- the hot path ------------------------------------------------------------------------

    def request_done(self, request: web.Request, status: int, seconds: float) -> None:
        """One answered request (web/middlewares.py): a dict lookup, an add and a bisect."""
        route = request.match_info.route
        # A 404's route is made per request: all of them share one key.
        key = (route if route.resource is not None else None, status)
        bound = self._per_route.get(key)
        if bound is None:
            bound = self._bind_route(*key)
        bound[0].value += 1
        bound[1].observe(seconds)

    def _bind_route(self, route: object, status: int) -> tuple[_Count, _Buckets]:
        resource = getattr(route, "resource", None)
        if resource is None:  # no route matched (404, 405): one series for all such paths
            endpoint, method = "unmatched", "-"
        else:
            endpoint, method = resource.canonical, getattr(route, "method", "-")
        bound = (
            self._requests.child((endpoint, method, str(status))),
            self._latency.child((area_of(endpoint),)),
        )
        self._per_route[(route, status)] = bound
        return bound

    # -- committed attempts, raised alerts ----------------------------------------------------

    def attempts_committed(self, attempts: Sequence[Attempt]) -> None:
        """An `AttemptLog.observe` observer: one batch, after its commit."""
        self._batch_size.observe(len(attempts))
        per_attempt = self._per_attempt
        for attempt in attempts:
            key = (attempt.endpoint, attempt.result, attempt.reason)
            count = per_attempt.get(key)
            if count is None:
                count = _capped(per_attempt, key, self._verifications.child)
            count.value += 1

    def alert_raised(self, signal: AlertSignal, raised: RaisedAlert) -> None:
        """A `runtime.alerts` listener (licensing/alerts.py)."""
        key = (signal.detector, str(signal.severity))
        inc = self._per_alert.get(key)
        if inc is None:
            inc = _capped(self._per_alert, key, lambda labels: self._alerts.labels(*labels).inc)
        inc()

    # -- read when scraped ---------------------------------------------------------------------

    def watch_pending(self, pending: Callable[[], int]) -> None:
        self._sources.pending = pending

    def watch_refusals(self, refusals: Callable[[], Tally[str]]) -> None:
        self._sources.refusals.append(refusals)

    def watch_caches(self, stats: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self._sources.caches = stats

    def watch_tarpit(self, tarpit: Tarpit) -> None:
        self._sources.tarpit = tarpit

    def watch_anomaly(self, stats: Callable[[], dict]) -> None:
        """The anomaly engine's `stats` (read when scraped; nothing on the verify path)."""
        self._sources.anomaly = stats


def _capped(bound: dict, key: tuple[str, ...], make: Callable):
    """The child for `key`, kept in `bound`; past MAX_LABEL_SETS keys, the last label is
    "other" and nothing more is kept (neither the series nor the dict grow any more)."""
    if len(bound) >= MAX_LABEL_SETS:
        return make((*(value[:64] for value in key[:-1]), OTHER))
    child = bound[key] = make(tuple(value[:64] for value in key))
    return child


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Counts:
    """A labelled counter as plain integers, counted on the event loop without a lock."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self._children: dict[tuple[str, ...], _Count] = {}

    def child(self, values: tuple[str, ...]) -> _Count:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Count()
        return child

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in self._children.items():
            family.add_metric(values, child.value)
        return family


class _Buckets:
    """One histogram's counts per bucket (`le` bounds, +Inf last) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value


class _Histograms:
    """A labelled histogram as plain numbers, exported with prometheus_client's bucket names."""

    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self._bounds = tuple(float(bound) for bound in bounds)
        self._children: dict[tuple[str, ...], _Buckets] = {}

    def child(self, values: tuple[str, ...]) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(self._bounds)
        return child

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        names = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        for values, child in self._children.items():
            cumulative, buckets = 0, []
            for name, count in zip(names, child.counts, strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            family.add_metric(list(values), buckets, child.sum)
        return family


class _Families:
    """The collector of the `_Counts` and `_Histograms` above, read when scraped."""

    def __init__(self, metrics: Sequence[_Counts | _Histograms]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield metric.family()


class _ScrapeTimeValues:
    """Values the server keeps anyway, turned into metrics only when scraped."""

    def __init__(self) -> None:
        self.pending: Callable[[], int] | None = None
        self.refusals: list[Callable[[], Tally[str]]] = []
        self.caches: Callable[[], dict[str, tuple[int, int]]] | None = None
        self.anomaly: Callable[[], dict] | None = None
        self.tarpit: Tarpit | None = None

    def collect(self) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            f"{PREFIX}attempt_log_pending", "Attempts waiting to be committed to the attempt log."
        )
        pending.add_metric([], self.pending() if self.pending else 0)
        yield pending
        limited = CounterMetricFamily(
            f"{PREFIX}rate_limited",
            "Requests refused by a rate limit, by limit (policy).",
            labels=["limit"],
        )
        total: Tally[str] = Tally()
        for refusals in self.refusals:
            total.update(refusals())
        for policy, count in sorted(total.items()):
            limited.add_metric([policy], count)
        yield limited
        if self.tarpit is not None:
            refusals = CounterMetricFamily(
                f"{PREFIX}throttled_refusals",
                "Refusals by a rate limit (429): held before they were sent, or sent at once "
                "because the tarpit was full (web/tarpit.py).",
                labels=["sent"],
            )
            refusals.add_metric(["after_hold"], self.tarpit.held)
            refusals.add_metric(["at_once_tarpit_full"], self.tarpit.sent_at_once)
            yield refusals
            holding = GaugeMetricFamily(
                f"{PREFIX}throttled_refusals_holding", "Refusals being held right now."
            )
            holding.add_metric([], self.tarpit.holding)
            yield holding
        lookups = CounterMetricFamily(
            f"{PREFIX}cache_lookups",
            "Lookups in the verifier's caches, by cache and result (hit, miss).",
            labels=["cache", "result"],
        )
        for name, (hits, misses) in sorted((self.caches() if self.caches else {}).items()):
            lookups.add_metric([name, "hit"], hits)
            lookups.add_metric([name, "miss"], misses)
        yield lookups
        if self.anomaly is not None:
            yield from _anomaly_metrics(self.anomaly())


def _anomaly_metrics(stats: dict) -> Iterable[Metric]:
    """The engine's stats as metric families; the labels are the detectors' and maps' own
    names (a fixed set, not data)."""
    a = f"{PREFIX}anomaly_"
    for name, key, text in (
        ("observed", "observed", "Attempts the anomaly detectors observed."),
        (
            "findings_dropped",
            "findings_dropped",
            "Findings dropped because the alert task's queue was full.",
        ),
        (
            "held_dropped",
            "held_dropped",
            "Attempts not observed: committed during the start-up rebuild past the holding cap.",
        ),
    ):
        counter = CounterMetricFamily(a + name, text)
        counter.add_metric([], stats[key])
        yield counter
    raised = CounterMetricFamily(
        a + "alerts_raised",
        "Alerts raised by the anomaly engine, by detector.",
        labels=["detector"],
    )
    for detector, count in sorted(stats["raised"].items()):
        raised.add_metric([detector], count)
    yield raised
    for name, key, text in (
        ("findings_queued", "queued", "Findings waiting for the alert task."),
        ("rebuilding", "rebuilding", "1 while the start-up rebuild runs."),
        ("rebuild_rows", "rebuild_rows", "Attempts read by the last start-up rebuild."),
        (
            "rebuild_duration_seconds",
            "rebuild_seconds",
            "Wall time of the last start-up rebuild (the server answers meanwhile).",
        ),
    ):
        gauge = GaugeMetricFamily(a + name, text)
        gauge.add_metric([], float(stats[key]))
        yield gauge
    labels = ["detector", "map"]
    entries = GaugeMetricFamily(
        a + "tracked_entries", "Entries in a detector's bounded map.", labels=labels
    )
    cap = GaugeMetricFamily(
        a + "tracked_cap", "The cap of a detector's map (anomaly.max_tracked).", labels=labels
    )
    evicted = CounterMetricFamily(
        a + "tracked_evicted", "Entries a full map dropped to make room.", labels=labels
    )
    for detector, name, size, limit, dropped in stats["windows"]:
        entries.add_metric([detector, name], size)
        cap.add_metric([detector, name], limit)
        evicted.add_metric([detector, name], dropped)
    yield entries
    yield cap
    yield evicted


def _version() -> str:
    try:
        return metadata.version("license-server")
    except metadata.PackageNotFoundError:
        return "unknown"

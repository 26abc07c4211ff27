"""The anomaly engine: attempts in, alerts out, nothing awaited on the verify path.

`observe(batch)` is the attempt log's observer (called on the event loop after each batch
commits): it counts each attempt into the detectors' windows and queues what they find. One
background task (`run`, started by app.py's cleanup context) does everything that touches the
database: loads the seats a key-sharing finding is judged against, reads sample attempt ids,
raises the alerts (`Alerts.raise_many`, one transaction per round of findings), reads binds
from the change log (churn), folds closed hours into the baseline and sweeps idle entries out
of the windows.

Detectors work in event time (the attempts' `at_ms`), never the wall clock, so a replay (the
start-up rebuild, bench/simulate.py) behaves exactly as live traffic did.

Start-up (`rebuild`): the windows are refilled from the newest attempts of the longest window
through the at_ms index (at most `rebuild_max_rows`, the newest; one index walk to find where
to start, then keyset pages), quietly: it learns, it does not raise again what was raised
before the restart (and may have been resolved since). An attack that straddles a restart is
seen whole: its first half is in the rebuilt windows, its second half pushes them over.
Each instance sees the attempts it served; churn reads the shared change log.

The server answers while the rebuild runs (app.py starts it in the alert task): 300,000
attempts take 5-8 s of one core (bench/README.md "anomaly_rebuild"), too long to keep modules
waiting. The rebuild gives the loop back every `REPLAY_SLICE` rows and reads the next page
while it feeds the current one; batches committed meanwhile are held (`hold`, at most
HOLD_MAX attempts, the excess counted in `held_dropped`) and fed, not quietly, once
the replay is done. The replay reads attempts before the instant the rebuild started, the held
batches were all stamped after it (the server was not answering before), so none is counted
twice. `work()` waits for the rebuild: nothing is raised from half-built windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from license_server.anomaly import detectors as d
from license_server.anomaly.churn import KINDS, Churn
from license_server.anomaly.windows import WindowCounter, WindowSet
from license_server.db import anomaly as queries
from license_server.db.database import Database
from license_server.licensing.alerts import Alerts, AlertSignal
from license_server.licensing.attempt_log import Attempt
from license_server.licensing.changes import Change, ChangeKind
from license_server.settings import AnomalySettings

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
# Event time between sweeps of idle window entries. A sweep walks every map (up to
# max_tracked entries each) on the event loop: every 10 minutes keeps that rare; the caps bound
# the memory meanwhile.
SWEEP_MS = 600_000
POLL_SECONDS = 5.0  # the change log is read at least this often (other instances' binds)
REPLAY_PAGE = 5_000
HOLD_MAX = 100_000  # attempts held while rebuilding (~10 minutes' worth at 150 checks/s)
REPLAY_SLICE = 500  # rows fed between two yields to the loop (~8 ms of CPU)
SAMPLE_IDS = 5
# Every detector's name (its alerts' `detector`), in the order reports list them.
DETECTOR_NAMES = tuple(
    detector.name
    for detector in (
        d.KeySharing, d.KeyGuessing, d.DomainMismatch, d.CheckFlooding, d.Persistence,
        d.IpMismatch, d.ClientVersion, Churn,
    )
)  # fmt: skip
# Alerts written per transaction by one round of the alert task.
RAISE_BATCH = 200
SEATS_TTL_SECONDS = 300.0
# Licenses' hourly counts grouped by product per slice of the fold, between yields.
FOLD_SLICE = 5_000


def max_window_ms(s: AnomalySettings) -> int:
    """The longest window of the enabled attempt detectors: how far back the rebuild reads."""
    windows = [3_600_000 if s.flooding_enabled else 0]
    if s.key_sharing_enabled:
        windows.append(s.key_sharing_window_hours * HOUR_MS)
    if s.key_guessing_enabled:
        windows.append(s.key_guessing_window_minutes * 60_000)
    if s.domain_mismatch_enabled:
        windows.append(s.domain_mismatch_window_minutes * 60_000)
    if s.persistence_enabled:
        windows.append(s.persistence_window_hours * HOUR_MS)
    if s.ip_mismatch_enabled:
        windows.append(s.ip_mismatch_window_hours * HOUR_MS)
    if s.client_version_enabled:
        windows.append(s.client_version_window_hours * HOUR_MS)
    return max(windows)


class AnomalyEngine:
    def __init__(
        self,
        settings: AnomalySettings,
        db: Database | None = None,
        alerts: Alerts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._db = db
        self._alerts = alerts
        self._clock = clock
        ctx = self.ctx = d.Context(settings)
        s = settings
        self.key_sharing = d.KeySharing(ctx) if s.key_sharing_enabled else None
        self.client_version = d.ClientVersion(ctx) if s.client_version_enabled else None
        chosen = [
            self.key_sharing,
            d.KeyGuessing(ctx) if s.key_guessing_enabled else None,
            d.DomainMismatch(ctx) if s.domain_mismatch_enabled else None,
            d.CheckFlooding(ctx) if s.flooding_enabled else None,
            d.Persistence(ctx) if s.persistence_enabled else None,
            d.IpMismatch(ctx) if s.ip_mismatch_enabled else None,
            self.client_version,
        ]
        self.detectors = [x for x in chosen if x is not None]
        self._observers = tuple(x.observe for x in self.detectors)
        # An accepted check ("ok") goes only to the detectors that can count one (counts_ok).
        self._ok_observers = tuple(x.observe for x in self.detectors if x.counts_ok)
        self.churn = Churn(ctx) if s.churn_enabled else None
        self._hour: int | None = None
        self._hour_counts: dict[int, int] = {}
        self._closed: list[dict[int, int]] = []
        self._majors: dict[int, float] = {}
        self._latest_ms = 0
        self._swept_ms = 0
        self._change_seq = 0
        self._changes_pending = True
        self._wake = asyncio.Event()
        self._working = asyncio.Lock()  # `work` from a test waits for the task's round
        self.raised = 0  # alerts written (new or bumped)
        self.raised_by_detector: dict[str, int] = {}
        self.observed = 0
        # The start-up rebuild: batches held meanwhile, and what it did (shown in /metrics).
        self._held: deque[Sequence[Attempt]] | None = None
        self._held_count = 0
        self.held_dropped = 0
        self._rebuilt = asyncio.Event()
        self._rebuilt.set()
        self.last_rebuild_rows = 0
        self.last_rebuild_seconds = 0.0

    # -- the hot path ----------------------------------------------------------------------

    def observe(self, batch: Sequence[Attempt]) -> None:
        """The attempt log's observer: O(1) amortised work per attempt, no await."""
        if self._held is not None:  # rebuilding: fed once the replay is done
            if self._held_count + len(batch) > HOLD_MAX:
                self.held_dropped += len(batch)
            else:
                self._held.append(batch)
                self._held_count += len(batch)
            return
        for attempt in batch:
            self.feed(attempt)
        if self.ctx.findings or self._closed:
            self._wake.set()

    def feed(self, a: Attempt) -> None:
        at = a.at_ms
        if at > self._latest_ms:
            self._latest_ms = at
            hour = at // HOUR_MS
            if hour != self._hour:
                if self._hour is not None:
                    self._closed.append(self._hour_counts)
                    self._hour_counts = {}
                self._hour = hour
        self.observed += 1
        lid = a.license_id
        if lid is not None:
            counts = self._hour_counts
            if lid in counts:
                counts[lid] += 1
            elif len(counts) < self.ctx.cap:
                counts[lid] = 1
            if a.product:
                products = self.ctx.products
                if lid not in products:
                    d.admit(products, self.ctx.cap)
                    products[lid] = a.product
        for observe in self._ok_observers if a.reason == "ok" else self._observers:
            observe(a)

    def on_change(self, change: Change) -> None:
        """ChangeFeed listener: binds for churn; an edit may change a license's seats."""
        if change.kind in KINDS:
            self._changes_pending = True
            self._wake.set()
        if change.kind == ChangeKind.EDIT and change.license_id is not None:
            self.ctx.seats.pop(change.license_id, None)
        elif change.license_id is None and change.all_licenses:
            self.ctx.seats.clear()

    # -- off the hot path (used by the alert task and by the simulator) -----------------------

    def housekeeping(self) -> None:
        """Fold closed hours into the baseline, update the fleet's major version, sweep idle
        window entries (at most once every SWEEP_MS of event time); all at once (the simulator,
        tests). The alert task runs the same steps with `housekeep`, yielding between them."""
        for _ in self.housekeeping_steps():
            pass

    async def housekeep(self) -> None:
        """`housekeeping` in steps, giving the event loop back between them: a fold of one
        closed hour, a slice of `FOLD_SLICE` licenses' counts, a slice of SWEEP_SLICE keys of
        one window map's sweep (windows.py). No step
        holds the loop for longer than a few milliseconds at 10,000 licenses (bench/README.md
        "anomaly_stall"), so no verify request waits behind the baseline or a sweep."""
        for _ in self.housekeeping_steps():
            await asyncio.sleep(0)

    def housekeeping_steps(self) -> Iterator[None]:
        closed, self._closed = self._closed, []
        for counts in closed:
            by_product: dict[str, list[int]] = {}
            products = self.ctx.products
            for done, (lid, n) in enumerate(counts.items(), 1):
                by_product.setdefault(products.get(lid, ""), []).append(n)
                if done % FOLD_SLICE == 0:
                    yield
            self.ctx.baseline.add_hour(by_product)
            yield
        if self.client_version is not None:
            for major, n in self._majors.items():
                self._majors[major] = n * 0.5  # halve the past: the fleet's *recent* majority
            for major, n in self.client_version.take_majors().items():
                self._majors[major] = self._majors.get(major, 0.0) + n
            self._majors = {m: n for m, n in self._majors.items() if n >= 0.5}
            total = sum(self._majors.values())
            if total >= 100:
                self.ctx.fleet_major = max(self._majors, key=self._majors.__getitem__)
        if self._latest_ms - self._swept_ms >= SWEEP_MS:
            self._swept_ms = swept = self._latest_ms
            for detector in self.detectors:
                for window in self._window_maps(detector):
                    yield from window.sweep_steps(swept)
            if self.churn is not None:
                yield
                self.churn.refresh(swept // 1000)

    def take_findings(self) -> list[d.Finding]:
        findings = list(self.ctx.findings)
        self.ctx.findings.clear()
        return findings

    def judge_sharing(self, finding: d.Finding, seats: int) -> d.Finding | None:
        assert self.key_sharing is not None
        return self.key_sharing.describe(finding, seats)

    # -- start-up ----------------------------------------------------------------------------

    def hold(self) -> None:
        """From now until the rebuild is done, hold committed batches instead of feeding
        them (app.py calls it before the server answers, the rebuild then runs beside)."""
        if self._held is None:
            self._held = deque()
            self._held_count = 0
            self._rebuilt.clear()

    @property
    def rebuilding(self) -> bool:
        return self._held is not None

    async def rebuild(self, stop: asyncio.Event | None = None) -> int:
        """Refill the windows from the log (quietly), then feed what was held meanwhile;
        returns how many attempts were read from the log."""
        assert self._db is not None
        self.hold()
        now_ms = int(self._clock() * 1000)
        since = now_ms - max_window_ms(self.settings)
        started = time.perf_counter()
        read, start = 0, since
        self.ctx.quiet = True
        try:
            async with self._db.read() as conn:
                start = await queries.replay_start(conn, since, self.settings.rebuild_max_rows)
            rows = await self._replay_page((start, 0), now_ms)
            while rows and not (stop is not None and stop.is_set()):
                full = len(rows) == REPLAY_PAGE
                following = (
                    asyncio.ensure_future(
                        self._replay_page((int(rows[-1]["at_ms"]), int(rows[-1]["id"])), now_ms)
                    )
                    if full
                    else None
                )
                try:
                    for first in range(0, len(rows), REPLAY_SLICE):
                        for row in rows[first : first + REPLAY_SLICE]:
                            self.feed(_attempt(row))
                        await asyncio.sleep(0)
                except BaseException:
                    if following is not None:
                        following.cancel()
                    raise
                read += len(rows)
                rows = await following if following is not None else []
            await self._read_changes(now_ms // 1000, first=True)
            for _ in self.housekeeping_steps():
                await asyncio.sleep(0)
        finally:
            self.ctx.quiet = False
            self.ctx.findings.clear()
            self.last_rebuild_rows = read
            self.last_rebuild_seconds = time.perf_counter() - started
            await self._feed_held(now_ms)
        log.log(
            logging.INFO if read else logging.DEBUG,  # a first start says nothing
            "anomaly detectors: rebuilt from %d attempts of the last %d minutes in %.1f s",
            read,
            (now_ms - start) // 60_000,
            self.last_rebuild_seconds,
        )
        return read

    async def _replay_page(self, after: tuple[int, int], until_ms: int) -> list:
        assert self._db is not None
        async with self._db.read() as conn:
            return await queries.replay_page(conn, after, until_ms, REPLAY_PAGE)

    async def _feed_held(self, replayed_until_ms: int) -> None:
        """Feed the batches held during the rebuild, then stop holding. Attempts stamped
        before the replay's end were read by the replay (only a clock set back could make
        one), so they are not counted again."""
        held = self._held
        try:
            while held:
                batch = [a for a in held.popleft() if a.at_ms >= replayed_until_ms]
                for first in range(0, len(batch), REPLAY_SLICE):
                    for attempt in batch[first : first + REPLAY_SLICE]:
                        self.feed(attempt)
                    await asyncio.sleep(0)
        finally:
            self._held = None  # no await between the last look at `held` and this
            self._held_count = 0
            self._rebuilt.set()
            if self.ctx.findings:
                self._wake.set()

    # -- what /metrics shows (web/metrics.py reads it when scraped) --------------------------

    @staticmethod
    def _window_maps(detector: object) -> list[WindowCounter | WindowSet]:
        """The sliding-window maps of a detector: what its `sweep` sweeps."""
        return [v for v in vars(detector).values() if isinstance(v, WindowCounter | WindowSet)]

    def windows(self) -> list[tuple[str, str, int, int, int]]:
        """(detector, map, entries, cap, evicted) of every bounded map the detectors keep: a
        map at its cap is forgetting its oldest entries (a flood, or a cap set too low)."""
        out = []
        for detector in self.detectors:
            for name, value in vars(detector).items():
                if isinstance(value, WindowCounter | WindowSet):
                    out.append((detector.name, name, len(value), value.cap, value.evicted))
        ctx = self.ctx
        for name, mapping in (("products", ctx.products), ("seats", ctx.seats)):
            out.append(("engine", name, len(mapping), ctx.cap, 0))
        out.append(("engine", "fired", len(ctx._fired), ctx.cap, 0))
        return out

    def stats(self) -> dict[str, object]:
        """Counters and gauges of the engine, read when /metrics is scraped."""
        return {
            "observed": self.observed,
            "findings_dropped": self.ctx.dropped,
            "held_dropped": self.held_dropped,
            "queued": len(self.ctx.findings),
            "raised": dict(self.raised_by_detector),
            "rebuilding": self.rebuilding,
            "rebuild_rows": self.last_rebuild_rows,
            "rebuild_seconds": self.last_rebuild_seconds,
            "windows": self.windows(),
        }

    # -- the alert task ----------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The alert task; first the rebuild when `hold` was called (app.py)."""
        if self.rebuilding:
            try:
                await self.rebuild(stop)
            except Exception:
                log.exception("anomaly detectors: rebuilding from the log failed; starting empty")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                await self.work()
            except Exception:
                log.exception("anomaly detectors: raising alerts failed; will retry")
        with contextlib.suppress(Exception):
            await self.work()  # what was found before the stop

    async def work(self) -> None:
        """One round of the alert task: whatever was found so far is written when it returns
        (after the start-up rebuild, when one is running)."""
        await self._rebuilt.wait()
        async with self._working:
            await self._work()

    async def _work(self) -> None:
        if self.churn is not None:
            await self._read_changes(int(self._clock()))
        await self.housekeep()
        findings = self.take_findings()
        sharing = [f for f in findings if f.detector == d.KeySharing.name]
        if sharing:
            await self._load_seats([f.license_id for f in sharing if f.license_id is not None])
        judged: list[d.Finding] = []
        for finding in findings:
            if finding.detector == d.KeySharing.name:
                finding = self.judge_sharing(finding, self.ctx.seats.get(finding.license_id, 1))  # type: ignore[arg-type,assignment]
                if finding is None:
                    continue
            judged.append(finding)
        for start in range(0, len(judged), RAISE_BATCH):
            await self._raise(judged[start : start + RAISE_BATCH])

    async def _load_seats(self, license_ids: list[int]) -> None:
        assert self._db is not None
        missing = sorted({i for i in license_ids if i not in self.ctx.seats})
        if not missing:
            return
        async with self._db.read() as conn:
            found = await queries.seats(conn, missing)
        for license_id in missing:
            d.admit(self.ctx.seats, self.ctx.cap)
            self.ctx.seats[license_id] = found.get(license_id, 1)

    async def _raise(self, findings: list[d.Finding]) -> None:
        """One read for the samples of every finding, one transaction for their alerts."""
        assert self._db is not None and self._alerts is not None
        async with self._db.read() as conn:
            samples = await queries.samples(
                conn, [self._sample_of(f) for f in findings], SAMPLE_IDS
            )
        signals = [
            AlertSignal(
                finding.detector,
                finding.subject,
                finding.severity,
                finding.summary,
                {**finding.evidence, "sample_attempt_ids": ids},
                finding.license_id,
            )
            for finding, ids in zip(findings, samples, strict=True)
        ]
        await self._alerts.raise_many(signals)
        self.raised += len(signals)
        for signal in signals:
            by = self.raised_by_detector
            by[signal.detector] = by.get(signal.detector, 0) + 1

    def _sample_of(self, finding: d.Finding) -> queries.SampleOf | None:
        """Where the attempt ids behind a finding are read: an index (license, or address
        range); None when neither names them."""
        since = finding.at_ms - max_window_ms(self.settings)
        if finding.license_id is not None:
            return queries.SampleOf(since, license_id=finding.license_id)
        if finding.subject.startswith("net:") and "." in finding.subject:
            prefix = finding.subject[4:].rsplit(".", 1)[0] + "."  # the /24's dotted prefix
            high = prefix[:-1] + "/"  # '/' sorts right after '.'
            return queries.SampleOf(since, low=prefix, high=high)
        return None

    async def _read_changes(self, now_s: int, first: bool = False) -> None:
        """Binds, releases and reissues from the change log since the last read (churn)."""
        if self.churn is None or self._db is None:
            return
        self._changes_pending = False
        since = now_s - self.churn.window_s
        while True:
            async with self._db.read() as conn:
                rows = await queries.binds_after(conn, self._change_seq, since, KINDS, 1000)
            for row in rows:
                self._change_seq = int(row["seq"])
                self.churn.observe(int(row["license_id"]), row["kind"], int(row["at"]))
            if len(rows) < 1000:
                break
        if first:
            self.churn.refresh(now_s)


def _attempt(row: dict) -> Attempt:
    return Attempt(
        at_ms=int(row["at_ms"]),
        endpoint=row["endpoint"],
        source_ip=row["source_ip"],
        reported_ip=row["reported_ip"],
        domain_raw="",
        domain=row["domain"],
        directory="",
        license_id=row["license_id"],
        key_hash=bytes(row["key_hash"]) if row["key_hash"] is not None else None,
        product=row["product"],
        result=row["result"],
        reason=row["reason"],
        client_version=row["client_version"],
        user_agent="",
        latency_us=0,
    )

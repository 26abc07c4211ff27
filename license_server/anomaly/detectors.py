"""The detectors that read the attempt stream, one class each, sharing a `Context`.

Each `observe(attempt)` runs on the event loop for every committed attempt, so it only does
O(1) amortised work on bounded windows (`windows`) and, when a threshold is crossed, builds a
`Finding` (words for a support person, evidence with counts and samples) and queues it; the
alert task writes it (`engine`). A detector fires for a subject at most once per
`refire_seconds` (in memory); the alert store keeps one alert per (detector, subject) anyway.

What each looks for (thresholds in settings.toml `[anomaly]`):
- key_sharing: one license from more registrable domains or source networks than its seats
  allow (the seats are known to the alert task: a finding names the sites, the task decides);
- key_guessing: many unknown or forged keys from one network, or one unknown key (the same
  keyed hash in the log: the log never holds the key itself) from many networks;
- domain_mismatch: a burst of refusals of one license for its domain (not allowed, no seat);
- check_flooding: far more checks of one license in an hour than the absolute rule and than
  its product's usual rate (the baseline); rate-limited checks count, they carry the license;
- persistence: a revoked or suspended license that keeps checking in (a cracked install);
- ip_mismatch: installs of one license whose reported IP never equals the source address;
- client_version: unknown (unparseable) or old client versions.
Activation churn reads binds from the change log instead (`churn`).

`counts_ok`: whether a detector can count an attempt whose reason is "ok" (an accepted check,
almost all traffic). The engine hands such attempts only to those that can (issue #16: three
of seven detectors' calls per accepted check were a test that returned at once).
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass, field

from license_server.anomaly.baseline import Baseline
from license_server.anomaly.sites import display_network, is_public_ip, network_of, site_of
from license_server.anomaly.windows import WindowCounter, WindowSet, admit
from license_server.licensing.alerts import Severity
from license_server.licensing.attempt_log import Attempt
from license_server.settings import AnomalySettings

SAMPLES = 5
QUEUE_MAX = 10_000  # findings waiting for the alert task; more are counted and dropped
GUESS_REASONS = frozenset({"unknown_key", "bad_signature"})
GUESS_LIMIT_POLICY = "unknown-key-per-ip"  # a guess refused by the rate limiter
MISMATCH_REASONS = frozenset({"domain_not_allowed", "seat_limit"})
DEAD_STATUSES = frozenset({"revoked", "suspended"})


@dataclass(slots=True)
class Finding:
    detector: str
    subject: str
    at_ms: int
    severity: Severity
    summary: str
    evidence: dict = field(default_factory=dict)
    license_id: int | None = None
    # Key sharing: the counts the alert task compares with the license's seats.
    sites: int = 0
    networks: int = 0


def window_words(ms: int) -> str:
    """'10 minutes', '1 hour', '24 hours', '7 days'."""
    minutes = ms // 60_000
    if minutes % (24 * 60) == 0 and minutes > 24 * 60:
        return f"{minutes // (24 * 60)} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "1 hour" if hours == 1 else f"{hours} hours"
    return f"{minutes} minutes"


def in_the_last(ms: int) -> str:
    """'in the last hour', 'in the last 24 hours'."""
    words = window_words(ms)
    return "in the last hour" if words == "1 hour" else f"in the last {words}"


class Context:
    """What the detectors share: settings, caps, the findings queue, the re-fire memory, each
    license's product (learnt from its attempts) and seats (loaded by the alert task)."""

    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.cap = settings.max_tracked
        self.findings: deque[Finding] = deque()
        self.dropped = 0
        self.quiet = False  # replaying the log at start-up: learn, do not fire
        self._refire_ms = settings.refire_seconds * 1000
        self._fired: dict[tuple[str, str], int] = {}
        self.products: dict[int, str] = {}
        self.seats: dict[int, int] = {}
        self.baseline = Baseline(settings.baseline_hours, settings.baseline_min_licenses)
        self.fleet_major: int | None = None

    def may_fire(self, detector: str, subject: str, at_ms: int) -> bool:
        if self.quiet:
            return False
        key = (detector, subject)
        last = self._fired.get(key)
        if last is not None and at_ms - last < self._refire_ms:
            return False
        if last is None:
            admit(self._fired, self.cap)
        self._fired[key] = at_ms
        return True

    def emit(self, finding: Finding) -> None:
        if len(self.findings) >= QUEUE_MAX:
            self.dropped += 1
            return
        self.findings.append(finding)

    def product_of(self, attempt: Attempt) -> str:
        if attempt.product:
            return attempt.product
        return self.products.get(attempt.license_id, "")  # type: ignore[arg-type]

    def tracked(self) -> int:
        return len(self._fired) + len(self.products) + len(self.seats)


def _sample(values: dict, n: int = SAMPLES) -> list:
    """The `n` most recently seen of `values` (value -> last seen ms)."""
    return [v for v, _ in sorted(values.items(), key=lambda item: -item[1])[:n]]


class KeySharing:
    name = "key_sharing"
    counts_ok = True

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.window = s.key_sharing_window_hours * 3_600_000
        self.extra_sites = s.key_sharing_extra_sites
        self.extra_networks = s.key_sharing_extra_networks
        self.sites: WindowSet[int, str] = WindowSet(self.window, ctx.cap, 64)
        self.networks: WindowSet[int, str] = WindowSet(self.window, ctx.cap, 64)
        self.waiting: dict[int, int] = {}  # licenses whose seats the alert task is loading

    def observe(self, a: Attempt) -> None:
        lid = a.license_id
        if lid is None:
            return
        site = site_of(a.domain)
        if site is None:
            return  # no domain, or a development host: the developer's network is no install
        at = a.at_ms
        new_sites = self.sites.add(lid, site, at)
        network = network_of(a.source_ip)
        new_networks = self.networks.add(lid, network, at) if network else None
        if new_sites is None and new_networks is None:
            return
        seats = self.ctx.seats.get(lid)
        sites = len(self.sites.values(lid, at))
        networks = len(self.networks.values(lid, at)) if network else 0
        if (
            sites <= (seats or 1) + self.extra_sites
            and networks <= (seats or 1) + self.extra_networks
        ):
            return
        if seats is None:
            # Over what one seat allows; the alert task loads the seats and judges (once).
            if self.ctx.quiet or lid in self.waiting:
                return
            admit(self.waiting, self.ctx.cap)
            self.waiting[lid] = at
        elif not self.ctx.may_fire(self.name, f"license:{lid}", at):
            return
        self.ctx.emit(
            Finding(
                self.name,
                f"license:{lid}",
                at,
                Severity.HIGH,
                "",  # written by `describe` once the seats are known
                {
                    "window": window_words(self.window),
                    "sites": sites,
                    "networks": networks,
                    "sample_sites": _sample(self.sites.values(lid, at)),
                    "sample_networks": [
                        display_network(n) for n in _sample(self.networks.values(lid, at))
                    ],
                },
                lid,
                sites,
                networks,
            )
        )

    def describe(self, finding: Finding, seats: int) -> Finding | None:
        """The finding in words once the license's seats are known; None when within them
        (or already raised within the re-fire interval)."""
        lid = finding.license_id
        waited = self.waiting.pop(lid, None)  # type: ignore[arg-type]
        # As they are now: more sites may have come while the seats were loading.
        sites = self.sites.values(lid, finding.at_ms)  # type: ignore[arg-type]
        networks = self.networks.values(lid, finding.at_ms)  # type: ignore[arg-type]
        finding.sites, finding.networks = len(sites), len(networks)
        finding.evidence.update(
            sites=len(sites),
            networks=len(networks),
            sample_sites=_sample(sites),
            sample_networks=[display_network(n) for n in _sample(networks)],
        )
        over_sites = finding.sites > seats + self.extra_sites
        over_networks = finding.networks > seats + self.extra_networks
        if not (over_sites or over_networks):
            return None
        if waited is not None and not self.ctx.may_fire(self.name, finding.subject, waited):
            return None
        e = finding.evidence
        e["seats"] = seats
        seat_words = "1 seat" if seats == 1 else f"{seats} seats"
        if over_sites:
            summary = (
                f"This license was used by {finding.sites} different websites "
                f"{in_the_last(self.window)} but has {seat_words}: the key is probably "
                f"shared. Sites: {', '.join(e['sample_sites'])}."
            )
        else:
            summary = (
                f"This license checked in from {finding.networks} different networks "
                f"{in_the_last(self.window)} but has {seat_words}: the key is probably "
                f"copied to other servers. Networks: {', '.join(e['sample_networks'])}."
            )
        finding.summary = summary
        return finding

    def sweep(self, now_ms: int) -> None:
        self.sites.sweep(now_ms)
        self.networks.sweep(now_ms)


class KeyGuessing:
    name = "key_guessing"
    counts_ok = False  # only unknown or forged keys

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.window = s.key_guessing_window_minutes * 60_000
        self.per_network = s.key_guessing_per_network
        self.family_networks = s.key_guessing_family_networks
        self.guesses: WindowCounter[str] = WindowCounter(self.window, ctx.cap)
        self.addresses: WindowSet[str, str] = WindowSet(self.window, ctx.cap, SAMPLES)
        self.families: WindowSet[bytes, str] = WindowSet(
            self.window, ctx.cap, self.family_networks + 1
        )

    def observe(self, a: Attempt) -> None:
        if a.reason not in GUESS_REASONS and not (
            a.result == "rate_limited" and a.reason == GUESS_LIMIT_POLICY
        ):
            return
        at = a.at_ms
        network = network_of(a.source_ip) or a.source_ip[:64]
        count = self.guesses.add(network, at)
        self.addresses.add(network, a.source_ip[:64], at)
        if count >= self.per_network and self.ctx.may_fire(self.name, f"net:{network}", at):
            shown = display_network(network)
            addresses = len(self.addresses.values(network, at))
            self.ctx.emit(
                Finding(
                    self.name,
                    f"net:{network}",
                    at,
                    Severity.HIGH,
                    f"{count} checks with unknown or forged license keys came from the network "
                    f"{shown} {in_the_last(self.window)} "
                    f"({'one address' if addresses == 1 else f'{addresses} addresses'}): "
                    "someone is probably guessing keys.",
                    {
                        "window": window_words(self.window),
                        "guesses": count,
                        "network": shown,
                        "addresses": addresses,
                        "last_domain": a.domain[:253],
                    },
                )
            )
        if a.key_hash:
            spread = self.families.add(a.key_hash, network, at)
            if spread and spread >= self.family_networks:
                tag = a.key_hash[:6].hex()
                if self.ctx.may_fire(self.name, f"key:{tag}", at):
                    networks = _sample(self.families.values(a.key_hash, at))
                    self.ctx.emit(
                        Finding(
                            self.name,
                            f"key:{tag}",
                            at,
                            Severity.HIGH,
                            f"The same unknown or forged license key (fingerprint {tag}) was "
                            f"tried from {spread} different networks "
                            f"{in_the_last(self.window)}: a forged key is circulating, or a "
                            "guessing run is spread over many addresses.",
                            {
                                "window": window_words(self.window),
                                "networks": spread,
                                "key_fingerprint": tag,
                                "sample_networks": [display_network(n) for n in networks],
                            },
                        )
                    )

    def sweep(self, now_ms: int) -> None:
        self.guesses.sweep(now_ms)
        self.addresses.sweep(now_ms)
        self.families.sweep(now_ms)


class _LicenseCount:
    """A detector that counts some attempts of one license in a window against a threshold."""

    name = ""
    severity = Severity.MEDIUM
    counts_ok = True

    def __init__(
        self, ctx: Context, window_ms: int, threshold: int, domains: int = SAMPLES
    ) -> None:
        self.ctx = ctx
        self.window = window_ms
        self.threshold = threshold
        self.counts: WindowCounter[int] = WindowCounter(window_ms, ctx.cap)
        self.domains: WindowSet[int, str] = WindowSet(window_ms, ctx.cap, domains)

    def counted(self, a: Attempt) -> bool:
        raise NotImplementedError

    def limit(self, a: Attempt) -> float:
        return self.threshold

    def also(self, a: Attempt, count: int) -> bool:
        """A further condition, checked only once the count is over the threshold."""
        return True

    def summary(self, a: Attempt, count: int, domains: list[str]) -> str:
        raise NotImplementedError

    def observe(self, a: Attempt) -> None:
        lid = a.license_id
        if lid is None or not self.counted(a):
            return
        at = a.at_ms
        count = self.counts.add(lid, at)
        if a.domain:
            self.domains.add(lid, a.domain[:253], at)
        if count < self.threshold or count < self.limit(a) or not self.also(a, count):
            return
        subject = f"license:{lid}"
        if not self.ctx.may_fire(self.name, subject, at):
            return
        domains = _sample(self.domains.values(lid, at))
        evidence = {
            "window": window_words(self.window),
            "checks": count,
            "sample_domains": domains,
            "last_address": display_network(network_of(a.source_ip) or ""),
        }
        self.add_evidence(a, evidence)
        self.ctx.emit(
            Finding(
                self.name,
                subject,
                at,
                self.severity,
                self.summary(a, count, domains),
                evidence,
                lid,
            )
        )

    def add_evidence(self, a: Attempt, evidence: dict) -> None:
        pass

    def sweep(self, now_ms: int) -> None:
        self.counts.sweep(now_ms)
        self.domains.sweep(now_ms)


class DomainMismatch(_LicenseCount):
    """Repeated refusals: at least `REPEATS` per refused domain on average, so that a shared
    key (many sites, each refused at its own slow cadence: key_sharing's case) is not also a
    burst, while one foreign site retrying, or a few, is."""

    name = "domain_mismatch"
    counts_ok = False  # only refusals
    REPEATS = 5

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        super().__init__(
            ctx, s.domain_mismatch_window_minutes * 60_000, s.domain_mismatch_refusals, 64
        )

    def counted(self, a: Attempt) -> bool:
        return a.reason in MISMATCH_REASONS

    def also(self, a: Attempt, count: int) -> bool:
        return count >= self.REPEATS * len(self.domains.values(a.license_id, a.at_ms))  # type: ignore[arg-type]

    def summary(self, a: Attempt, count: int, domains: list[str]) -> str:
        return (
            f"This license was refused {count} times {in_the_last(self.window)} "
            f"because it was used on websites it is not registered for ({', '.join(domains)}): "
            "someone may be trying the key on other sites."
        )


class CheckFlooding(_LicenseCount):
    name = "check_flooding"

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        super().__init__(ctx, 3_600_000, s.flooding_checks_per_hour + 1)
        self.mads = s.flooding_mads

    def counted(self, a: Attempt) -> bool:
        return True

    def limit(self, a: Attempt) -> float:
        usual = self.ctx.baseline.get(self.ctx.product_of(a))
        return self.threshold if usual is None else max(self.threshold, usual.limit(self.mads))

    def add_evidence(self, a: Attempt, evidence: dict) -> None:
        usual = self.ctx.baseline.get(self.ctx.product_of(a))
        if usual is not None:
            evidence["product_median_per_hour"] = usual.median
            evidence["product_mad_per_hour"] = usual.mad

    def summary(self, a: Attempt, count: int, domains: list[str]) -> str:
        usual = self.ctx.baseline.get(self.ctx.product_of(a))
        compared = (
            usual.words("check {} times an hour")
            if usual is not None
            else "a module holding a valid local key needs to check only a few times a day"
        )
        return (
            f"This license checked {count} times in an hour; {compared}. A broken or cracked "
            "install may be calling the server on every page load."
        )


class Persistence(_LicenseCount):
    name = "persistence"
    severity = Severity.HIGH
    counts_ok = False  # only revoked / suspended answers

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        super().__init__(ctx, s.persistence_window_hours * 3_600_000, s.persistence_checks)

    def counted(self, a: Attempt) -> bool:
        return a.result in DEAD_STATUSES and a.reason == a.result

    def summary(self, a: Attempt, count: int, domains: list[str]) -> str:
        return (
            f"This license is {a.result} but still checked in {count} times "
            f"{in_the_last(self.window)} (from {', '.join(domains) or 'no domain'}): an "
            "install that ignores the answer, probably cracked."
        )


class IpMismatch:
    name = "ip_mismatch"
    counts_ok = True

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.window = s.ip_mismatch_window_hours * 3_600_000
        self.installs = s.ip_mismatch_installs
        self.matched: WindowSet[int, str] = WindowSet(self.window, ctx.cap, 64)
        self.mismatched: WindowSet[int, str] = WindowSet(self.window, ctx.cap, 64)
        self._public: dict[str, bool] = {}

    def _differs(self, reported: str, source: str) -> bool:
        """The reported address is a public IP and not the source address (private ones are
        what a server behind NAT sees of itself, not a lie)."""
        public = self._public.get(reported)
        if public is None:
            public = is_public_ip(reported)
            admit(self._public, self.ctx.cap)
            self._public[reported] = public
        if not public:
            return False
        try:
            return ipaddress.ip_address(reported) != ipaddress.ip_address(source)
        except ValueError:
            return True

    def observe(self, a: Attempt) -> None:
        lid = a.license_id
        if lid is None or not a.reported_ip:
            return
        site = site_of(a.domain)  # an install is a site: www. and staging. are the same one
        if site is None:
            return
        at = a.at_ms
        if a.reported_ip == a.source_ip:
            self.matched.add(lid, site, at)
            return
        if not self._differs(a.reported_ip, a.source_ip):
            return
        installs = self.mismatched.add(lid, site, at)
        if not installs or installs < self.installs or self.matched.values(lid, at):
            return
        if not self.ctx.may_fire(self.name, f"license:{lid}", at):
            return
        domains = _sample(self.mismatched.values(lid, at))
        self.ctx.emit(
            Finding(
                self.name,
                f"license:{lid}",
                at,
                Severity.MEDIUM,
                f"On {installs} installs of this license {in_the_last(self.window)} "
                "the server address the module reported never matched the address the check "
                f"came from ({', '.join(domains)}): the module may be modified to hide where "
                "it runs, or the checks are relayed.",
                {
                    "window": window_words(self.window),
                    "installs": installs,
                    "sample_domains": domains,
                    "last_reported_network": display_network(network_of(a.reported_ip) or ""),
                    "last_source_network": display_network(network_of(a.source_ip) or ""),
                },
                lid,
            )
        )

    def sweep(self, now_ms: int) -> None:
        self.matched.sweep(now_ms)
        self.mismatched.sweep(now_ms)


_VERSION = re.compile(r"^v?(\d{1,6})(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?(?:[-+ ].*)?$")


def parse_version(text: str) -> tuple[int, ...] | None:
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


class ClientVersion:
    name = "client_version"
    counts_ok = True

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.window = s.client_version_window_hours * 3_600_000
        self.threshold = s.client_version_checks
        self.lag = s.client_version_major_lag
        self.minimum = parse_version(s.client_version_minimum) if s.client_version_minimum else None
        self.counts: WindowCounter[str] = WindowCounter(self.window, ctx.cap)
        self._parsed: dict[str, tuple[int, ...] | None] = {}
        # Majors seen since the alert task last looked (it keeps the fleet's majority).
        self.majors: dict[int, int] = {}

    def classify(self, version: str) -> str | None:
        """'unknown', 'old' or None (fine)."""
        parsed = self._parsed.get(version, ())
        if parsed == ():
            parsed = parse_version(version)
            admit(self._parsed, self.ctx.cap)
            self._parsed[version] = parsed
        if parsed is None:
            return "unknown"
        major = parsed[0]
        if major in self.majors or len(self.majors) < 1000:
            self.majors[major] = self.majors.get(major, 0) + 1
        if self.minimum is not None and parsed < self.minimum:
            return "old"
        fleet = self.ctx.fleet_major
        if fleet is not None and major <= fleet - self.lag:
            return "old"
        return None

    def observe(self, a: Attempt) -> None:
        version = a.client_version
        if not version:
            return  # WHMCS modules send none
        kind = self.classify(version[:64])
        if kind is None:
            return
        at = a.at_ms
        if a.license_id is not None:
            subject = f"license:{a.license_id}"
        else:
            subject = f"net:{network_of(a.source_ip) or a.source_ip[:64]}"
        count = self.counts.add(subject, at)
        if count < self.threshold or not self.ctx.may_fire(self.name, subject, at):
            return
        if kind == "unknown":
            what = f"a client version the server does not recognise ({version[:40]!r})"
        else:
            what = f"an old client version ({version[:40]})"
        fleet = self.ctx.fleet_major
        self.ctx.emit(
            Finding(
                self.name,
                subject,
                at,
                Severity.LOW,
                f"{count} checks {in_the_last(self.window)} came with {what}"
                + (f"; most installs run version {fleet}" if fleet is not None else "")
                + ". An outdated or modified module is in use.",
                {
                    "window": window_words(self.window),
                    "checks": count,
                    "version": version[:64],
                    "kind": kind,
                    "fleet_major": fleet,
                    "minimum": self.ctx.settings.client_version_minimum,
                    "last_domain": a.domain[:253],
                },
                a.license_id,
            )
        )

    def take_majors(self) -> dict[int, int]:
        majors, self.majors = self.majors, {}
        return majors

    def sweep(self, now_ms: int) -> None:
        self.counts.sweep(now_ms)

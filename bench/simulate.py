#!/usr/bin/env python3
"""Simulated traffic with attacks injected at known times, replayed through the detectors.

    python bench/simulate.py                        # 10,000 licenses, 7 days
    python bench/simulate.py --licenses 2000 --days 2 --seed 3
    python bench/simulate.py --licenses 1000 --days 2 --attacks 5 --url http://127.0.0.1:8080 \
        --database data/license-server.db     # a compressed sample through a running server

Normal traffic: each license has a product (three, with different check-in cadences), seats
(1-3) and as many installs, each on its own registrable domain (some under a shared public
suffix such as .co.uk or .github.io) with its own source network; installs check in at their
cadence with a diurnal swing (busier by day in their time zone), sometimes from www. or
staging. subdomains and localhost (development hosts), some behind NAT reporting a private
address, a few multi-homed reporting another public one. Around 1% move site in the week (a
reissue: release, then a bind elsewhere), revoked licenses back off as the shipped clients do,
typos produce a few unknown keys, a two-hour outage is followed by a catch-up burst, a few
sites are down for a day, and a small share run the previous major client version.

Attacks, each of one detector's kind, at random known times (`--attacks` of each):
key_sharing (a key posted on a forum: 6-12 new sites), key_guessing (one network guessing
fast; or one forged key from 6-15 networks), domain_mismatch (a foreign site retrying every
minute or so), check_flooding (a cracked install checking on every page load), persistence
(a revoked key's cracked install), ip_mismatch (3-5 installs relayed through one fake reported
address), client_version (a cracked or ancient client), activation_churn (a key passed from
site to site, rebound every few hours).

The attempts are fed, in time order and in batches as the attempt log commits them, through
`AnomalyEngine.observe` with the simulated clock (no database: seats are given to the engine
as the alert task would load them; binds go to the churn detector as the change log would).
Printed: per detector the alerts (distinct subjects), true and false positives, precision
and recall, and the detectors' CPU time per attempt (process time spent inside `observe`).
A finding is a true positive when its detector and subject are those of an injected attack
of that detector's kind.

`--url`: the scenario is replayed, compressed, against a running server instead
(bench/simulate_url.py says how it is sampled and what the server needs).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from license_server.anomaly.engine import DETECTOR_NAMES, AnomalyEngine
from license_server.licensing.attempt_log import Attempt
from license_server.settings import AnomalySettings

HOUR = 3_600_000
MINUTE = 60_000
T0 = 1_893_456_000_000  # a Monday, 00:00 UTC
PRODUCTS = {"mymod": 1.0, "billing": 2.5, "tiny": 0.4}  # checks per install-hour (mean)
SUFFIXES = ["com", "net", "org", "io", "co.uk", "com.au", "de", "github.io", "shop"]
DETECTORS = DETECTOR_NAMES
BATCH = 32  # attempts per committed batch (about what 32 connections give)


@dataclass
class Install:
    domain: str
    source_ip: str
    reported_ip: str
    version: str
    down_from: int = -1  # ms; the site is down [down_from, down_to)
    down_to: int = -1


@dataclass
class License:
    id: int
    product: str
    seats: int
    status: str
    rate: float  # checks per install-hour
    tz: int  # hours east of UTC of its customers
    installs: list[Install] = field(default_factory=list)


class World:
    def __init__(self, rng: random.Random, licenses: int) -> None:
        self.rng = rng
        self.next_net = 0
        self.next_site = 0
        self.licenses: list[License] = []
        for i in range(1, licenses + 1):
            product = rng.choices(list(PRODUCTS), weights=(6, 3, 1))[0]
            seats = rng.choices((1, 2, 3), weights=(7, 2, 1))[0]
            status = "revoked" if rng.random() < 0.01 else "active"
            lic = License(
                i,
                product,
                seats,
                status,
                PRODUCTS[product] * rng.uniform(0.5, 1.5),
                rng.choice((-8, -5, 0, 1, 2, 8, 10)),
            )
            for _ in range(rng.randint(1, seats)):
                lic.installs.append(self.install())
            self.licenses.append(lic)

    def network(self) -> str:
        """A fresh public /24 ('A.B.C.'), never one of the attackers' (first octet 150+)."""
        self.next_net += 1
        n = self.next_net
        return f"{20 + n // 65536 % 120}.{n // 256 % 256}.{n % 256}."

    def attacker_network(self) -> str:
        self.next_net += 1
        n = self.next_net
        return f"{150 + n // 65536 % 50}.{n // 256 % 256}.{n % 256}."

    def site(self) -> str:
        self.next_site += 1
        return f"shop{self.next_site}.{self.rng.choice(SUFFIXES)}"

    def install(self, version: str | None = None) -> Install:
        rng = self.rng
        ip = self.network() + str(rng.randint(2, 250))
        roll = rng.random()
        reported = ip if roll < 0.7 else ("10.0.0.5" if roll < 0.95 else "")
        if rng.random() < 0.02:
            reported = self.network() + "9"  # multi-homed: reports another public address
        if version is None:
            previous = rng.random() < 0.05  # the previous major: not old (one behind)
            version = f"2.{rng.randint(0, 9)}.0" if previous else f"3.{rng.randint(0, 4)}.1"
        return Install(self.site(), ip, reported, version)


def attempt(at, lic_id, product, domain, ip, reported, result, reason, version, key_hash=None):
    return Attempt(
        at,
        "native",
        ip,
        reported,
        domain,
        domain,
        "",
        lic_id,
        key_hash,
        product,
        result,
        reason,
        version,
        "",
        0,
    )


def of_install(at, lic, inst, result, reason, *, domain=None, reported=None, version=None):
    """An attempt by one install of `lic`: its domain, addresses and client version unless given."""
    return attempt(
        at,
        lic.id,
        lic.product,
        inst.domain if domain is None else domain,
        inst.source_ip,
        inst.reported_ip if reported is None else reported,
        result,
        reason,
        inst.version if version is None else version,
    )


def guess(at, domain, ip, reason, key_hash):
    """A refused attempt with a key that matched no license (a guess or a forgery)."""
    return attempt(at, None, "", domain, ip, ip, "invalid", reason, "3.1.1", key_hash)


def diurnal(lic: License, at_ms: int) -> float:
    hour = (at_ms // HOUR + lic.tz) % 24
    return 1.0 + 0.6 * math.sin((hour - 9) / 24 * 2 * math.pi)


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.args = args
        self.world = World(self.rng, args.licenses)
        self.end = T0 + args.days * 24 * HOUR
        self.events: dict[int, list[Attempt]] = defaultdict(list)  # 10-minute slot -> attempts
        self.binds: list[tuple[int, int, str]] = []  # (at s, license, kind)
        self.truth: dict[str, set[str]] = {d: set() for d in DETECTORS}
        self.outage = (T0 + 3 * 24 * HOUR + 14 * HOUR, T0 + 3 * 24 * HOUR + 16 * HOUR)
        self.attacked: set[int] = set()
        self.housekeeping_cpu = 0.0
        # --url: which attack each injected attempt belongs to (id of the Attempt -> detector),
        # and the attacks' victims by kind.
        self.kind: str | None = None
        self.attack_of: dict[int, str] = {}
        self.victims: dict[str, set[int]] = {d: set() for d in DETECTORS}

    def add(self, a: Attempt) -> None:
        if self.outage[0] <= a.at_ms < self.outage[1]:
            return  # the server was down: nothing logged
        if T0 <= a.at_ms < self.end:
            self.events[a.at_ms // (10 * MINUTE)].append(a)
            if self.kind is not None:
                self.attack_of[id(a)] = self.kind

    def poisson_times(self, start: int, end: int, per_hour: float, lic: License | None = None):
        """Event times of a Poisson process (thinned by the diurnal curve when `lic`)."""
        rng = self.rng
        t = start
        peak = per_hour * (1.6 if lic else 1.0)
        while True:
            t += int(rng.expovariate(peak) * HOUR) + 1
            if t >= end:
                return
            if lic is None or rng.random() < diurnal(lic, t) / 1.6:
                yield t

    # -- normal traffic ---------------------------------------------------------------------

    def normal(self) -> None:
        rng = self.rng
        for lic in self.world.licenses:
            if lic.status == "revoked":
                self.revoked_backoff(lic)
                continue
            moved_at = None
            if rng.random() < 0.01 and lic.id not in self.attacked:
                moved_at = T0 + rng.randint(1, self.args.days * 24 - 2) * HOUR
            for n, inst in enumerate(lic.installs):
                if rng.random() < 0.02:
                    inst.down_from = T0 + rng.randint(0, self.args.days * 24 - 24) * HOUR
                    inst.down_to = inst.down_from + 24 * HOUR
                end = moved_at if (moved_at and n == 0) else self.end
                self.checks(lic, inst, T0, end)
            if moved_at:  # a reissue: the first install moves to a new site
                new = self.world.install()
                lic.installs.append(new)
                self.binds += [
                    (moved_at // 1000, lic.id, "reissue"),
                    (moved_at // 1000 + 600, lic.id, "bind"),
                ]
                self.checks(lic, new, moved_at + 600_000, self.end)
        for _ in range(self.args.licenses // 20):  # typos: a few unknown keys
            ip = self.world.network() + "7"
            at = T0 + rng.randint(0, self.end - T0 - 1)
            for k in range(rng.randint(1, 3)):
                self.add(guess(at + k * 30_000, "typo.com", ip, "unknown_key", rng.randbytes(8)))
        # After the outage every install catches up at once.
        for lic in self.world.licenses:
            for inst in lic.installs:
                if lic.status == "active" and rng.random() < 0.8:
                    at = self.outage[1] + rng.randint(0, 5 * MINUTE)
                    self.add(self.check(lic, inst, at))

    def check(self, lic: License, inst: Install, at: int) -> Attempt:
        rng = self.rng
        domain = inst.domain
        roll = rng.random()
        if roll < 0.03:
            domain = "staging." + domain
        elif roll < 0.05:
            domain = "www." + domain
        elif roll < 0.06:
            domain = "localhost"
        return of_install(at, lic, inst, "active", "ok", domain=domain)

    def checks(self, lic: License, inst: Install, start: int, end: int) -> None:
        for at in self.poisson_times(start, end, lic.rate, lic):
            if inst.down_from <= at < inst.down_to:
                continue
            self.add(self.check(lic, inst, at))

    def revoked_backoff(self, lic: License) -> None:
        """The shipped clients back off after a refusal: 1, 2, 4, ... hours between checks."""
        for inst in lic.installs:
            at, wait = T0 + self.rng.randint(0, 6 * HOUR), HOUR
            while at < self.end:
                self.add(of_install(at, lic, inst, "revoked", "revoked"))
                at += wait
                wait = min(wait * 2, 24 * HOUR)

    # -- attacks ------------------------------------------------------------------------------

    def victim(self, **want) -> License:
        rng = self.rng
        while True:
            lic = rng.choice(self.world.licenses)
            if lic.id in self.attacked or lic.status != "active":
                continue
            if all(getattr(lic, k) == v for k, v in want.items()):
                self.attacked.add(lic.id)
                if self.kind is not None:
                    self.victims[self.kind].add(lic.id)
                return lic

    def when(self, hours: int) -> int:
        """An attack's start: it lasts at most `hours` and does not overlap the outage."""
        for _ in range(100):  # an attack longer than either side of the outage spans it
            start = T0 + self.rng.randint(2, self.args.days * 24 - hours - 1) * HOUR
            if start + hours * HOUR <= self.outage[0] or start >= self.outage[1]:
                break
        return start

    def attacks(self) -> None:
        rng, w = self.rng, self.world
        for _ in range(self.args.attacks):
            self.kind = "key_sharing"
            # Key sharing: a key posted on a forum; new sites check about once an hour each
            # (faster, their refusals would also be a domain-mismatch burst).
            lic = self.victim()
            start = self.when(20)
            for _ in range(rng.randint(6, 12)):
                inst = w.install()
                for at in self.poisson_times(
                    start + rng.randint(0, 8 * HOUR), self.end, min(max(lic.rate, 0.5), 1.0), lic
                ):
                    self.add(
                        of_install(at, lic, inst, "invalid", "seat_limit", reported=inst.source_ip)
                    )
            self.truth["key_sharing"].add(f"license:{lic.id}")

            self.kind = "key_guessing"
            # Key guessing from one network: 40-300 guesses within 5-30 minutes
            net = w.attacker_network()
            # (at least 4 a minute: slower than 3 a minute it stays under 30 in 10 minutes).
            start, n = self.when(2), rng.randint(40, 300)
            span = rng.randint(5, min(30, n // 4)) * MINUTE
            for k in range(n):
                ip = net + str(rng.randint(2, 5))
                self.add(
                    guess(
                        start + k * span // n,
                        "pirate.example.net",
                        ip,
                        rng.choice(("unknown_key", "bad_signature")),
                        rng.randbytes(8),
                    )
                )
            self.truth["key_guessing"].add(f"net:{net}0/24")

            # One forged key tried from many networks within the hour.
            forged = rng.randbytes(32)
            start = self.when(2)
            for _ in range(rng.randint(6, 15)):
                ip = w.attacker_network() + "8"
                at = start + rng.randint(0, 9 * MINUTE)
                self.add(guess(at, "nulled.example.org", ip, "bad_signature", forged))
            self.truth["key_guessing"].add("key:" + forged[:6].hex())

            self.kind = "domain_mismatch"
            # Domain mismatch: a foreign site retrying every 75-110 s for an hour or two (33-48
            # an hour; faster than 60 an hour it would also be check flooding).
            lic = self.victim()
            inst, start = w.install(), self.when(3)
            at = start
            while at < start + rng.randint(1, 2) * HOUR:
                self.add(
                    of_install(
                        at, lic, inst, "invalid", "domain_not_allowed", reported=inst.source_ip
                    )
                )
                at += rng.randint(75_000, 110_000)
            self.truth["domain_mismatch"].add(f"license:{lic.id}")

            self.kind = "check_flooding"
            # Check flooding: a cracked install on the license's own site, 100-600 an hour.
            lic = self.victim()
            inst, start = lic.installs[0], self.when(4)
            for at in self.poisson_times(
                start, start + rng.randint(1, 3) * HOUR, rng.randint(100, 600)
            ):
                self.add(self.check(lic, inst, at))
            self.truth["check_flooding"].add(f"license:{lic.id}")

            self.kind = "persistence"
            # Persistence: revoked, and a cracked install keeps checking 8-40 times an hour.
            lic = self.victim()
            lic.status = "revoked"  # its genuine installs back off (normal traffic)
            inst, start = lic.installs[0], self.when(8)
            for at in self.poisson_times(
                start, start + rng.randint(5, 8) * HOUR, rng.randint(8, 40)
            ):
                self.add(of_install(at, lic, inst, "revoked", "revoked"))
            self.truth["persistence"].add(f"license:{lic.id}")

            self.kind = "ip_mismatch"
            # Reported IP never matching: 3-5 installs relayed, one fake reported address.
            lic = self.victim()
            fake, start = w.attacker_network() + "1", self.when(12)
            for inst in lic.installs:
                inst.reported_ip = fake
            for _ in range(rng.randint(3, 5)):
                inst = w.install()
                lic.seats = max(lic.seats, 6)  # a multi-seat license: no sharing, no refusals
                for at in self.poisson_times(start, start + 12 * HOUR, 1.0, lic):
                    self.add(of_install(at, lic, inst, "active", "ok", reported=fake))
            self.truth["ip_mismatch"].add(f"license:{lic.id}")

            self.kind = "client_version"
            # Client version: a cracked ("x-nulled") or ancient (1.x) client, 6-30 an hour.
            lic = self.victim()
            inst, start = lic.installs[0], self.when(3)
            version = rng.choice(("nulled-by-xx", "1.0.4", "v0.9"))
            for at in self.poisson_times(start, start + 2 * HOUR, rng.randint(6, 30)):
                self.add(of_install(at, lic, inst, "active", "ok", version=version))
            self.truth["client_version"].add(f"license:{lic.id}")

            self.kind = "activation_churn"
            # Activation churn: rebound to another site every 4-12 hours, 7-14 times.
            lic = self.victim()
            at = self.when(self.args.days * 24 // 2 + 12) // 1000  # in the first half
            for _ in range(rng.randint(7, 14)):
                self.binds += [(at, lic.id, "release"), (at + 60, lic.id, "bind")]
                at += rng.randint(4, 12) * 3600
            self.truth["activation_churn"].add(f"license:{lic.id}")
        self.kind = None

    # -- replay -------------------------------------------------------------------------------

    def replay(self) -> tuple[dict[str, set[str]], float, int]:
        engine = AnomalyEngine(AnomalySettings())
        seats = {lic.id: lic.seats for lic in self.world.licenses}
        for lic in self.world.licenses:  # as the rebuild and the first attempts teach it
            engine.ctx.products[lic.id] = lic.product
        found: dict[str, set[str]] = {d: set() for d in DETECTORS}
        binds = sorted(b for b in self.binds if T0 // 1000 <= b[0] < self.end // 1000)
        b = 0
        cpu = 0.0
        count = 0
        for slot in range(T0 // (10 * MINUTE), self.end // (10 * MINUTE)):
            batch = sorted(self.events.pop(slot, ()), key=lambda a: a.at_ms)
            started = time.process_time()
            for i in range(0, len(batch), BATCH):
                engine.observe(batch[i : i + BATCH])
            cpu += time.process_time() - started
            count += len(batch)
            slot_end = (slot + 1) * 10 * MINUTE // 1000
            while b < len(binds) and binds[b][0] < slot_end:
                at, lid, kind = binds[b]
                if engine.churn is not None:
                    engine.churn.observe(lid, kind, at)
                b += 1
            started = time.process_time()
            engine.housekeeping()  # the alert task's share on the loop: baseline, sweeps
            self.housekeeping_cpu += time.process_time() - started
            for finding in engine.take_findings():
                if finding.detector == "key_sharing":
                    lid = finding.license_id
                    engine.ctx.seats[lid] = seats[lid]  # what the alert task loads
                    if engine.judge_sharing(finding, seats[lid]) is None:
                        continue
                found[finding.detector].add(finding.subject)
        return found, cpu, count


def print_table(found: dict[str, set[str]], truth: dict[str, set[str]]) -> float:
    """Per detector: alerts, true and false positives, missed, precision and recall; returns
    the worst precision or recall."""
    print(
        f"{'detector':<18}{'alerts':>8}{'true':>6}{'false':>7}{'missed':>8}"
        f"{'precision':>11}{'recall':>8}"
    )
    worst = 1.0
    for detector in DETECTORS:
        if detector not in truth:
            continue
        alerts, expected = found[detector], truth[detector]
        tp = len(alerts & expected)
        precision = tp / len(alerts) if alerts else 1.0
        recall = tp / len(expected) if expected else 1.0
        worst = min(worst, precision, recall)
        print(
            f"{detector:<18}{len(alerts):>8}{tp:>6}{len(alerts - expected):>7}"
            f"{len(expected - alerts):>8}{precision:>11.3f}{recall:>8.3f}"
        )
        for subject in sorted(alerts - expected)[:3]:
            print(f"    false positive: {subject}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--attacks", type=int, default=20, help="attacks of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--url",
        help="replay a compressed sample through this running server's /api/v1/verify "
        "instead of in-process (see bench/simulate_url.py; use a few hundred licenses)",
    )
    parser.add_argument(
        "--api-key",
        help="--url: a vendor API key with license:* and alert:read (else made with "
        "`run.py create-api-key` against --database)",
    )
    parser.add_argument(
        "--database", help="--url without --api-key: the server's database (SQLite file or URL)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="--url: at most this many seconds waiting for the server's alerts to settle",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    sim = Simulation(args)
    sim.attacks()
    sim.normal()
    generated = time.perf_counter() - started
    if args.url:
        import simulate_url

        found, truth, count = simulate_url.run(sim, args)
        print(
            f"{args.licenses:,} licenses, {args.days} days compressed, {count:,} checks sent to "
            f"{args.url} ({args.attacks} attacks of each kind); generated in {generated:.0f} s"
        )
        worst = print_table(found, truth)
        verdict = "met" if worst >= 0.95 else "NOT met"
        print(f"target precision and recall >= 0.95 per detector: {verdict}")
        print(f"total {time.perf_counter() - started:.0f} s")
        return
    found, cpu, count = sim.replay()
    print(
        f"{args.licenses:,} licenses, {args.days} days, {count:,} attempts "
        f"({args.attacks} attacks of each kind); generated in {generated:.0f} s"
    )
    worst = print_table(found, sim.truth)
    house = sim.housekeeping_cpu
    print(
        f"detectors' CPU per attempt: {cpu / count * 1e6:.1f} µs in observe (the verify path), "
        f"+ {house / count * 1e6:.1f} µs in the alert task's housekeeping (baseline, sweeps)"
    )
    verdict = "met" if worst >= 0.95 else "NOT met"
    print(f"target precision and recall >= 0.95 per detector: {verdict}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

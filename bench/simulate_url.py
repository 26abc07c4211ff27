"""`bench/simulate.py --url URL`: the simulated scenario replayed against a running server.

The server's clock is real, so the simulated period cannot be replayed at its own pace: the
scenario is COMPRESSED. Its attempts are sent in simulated time order as fast as the server
answers (16 at a time), so the whole period lands within a minute or two of the server's time,
inside every detector window. For that to stay a fair test, what is sent is a sample chosen so
that compression alone cannot make an alert, and each attack keeps what makes it one:
- a license without an attack sends at most `NORMAL_PER_LICENSE` (15) of its checks, evenly
  spread over the period (below the lowest per-license threshold, persistence's 20);
- an attacked license sends at most `ATTACK_PER_LICENSE` (45) of the attack's checks plus
  `NORMAL_OF_VICTIM` (10) of its own (under flooding's 60 an hour); a shared key at most 3
  checks per foreign site (a burst per site would be a domain-mismatch burst instead);
- a flooding attack is sent whole, at least 150 and at most 200 checks (the server's baseline
  may have learnt from the compressed hour that licenses check ~30 times "an hour");
- guessing runs keep at most 100 guesses; forged-key runs are sent whole;
- a key passed from site to site is moved 6 times (7-14 in the simulation) and its license has
  8 seats: compressed into minutes its sites would otherwise all fall within key sharing's 24
  hours (more sites than seats + 2), an alert the simulation cannot count as right;
- the relayed installs of an ip_mismatch attack are cut so that the license binds at most 5
  sites (6 binds would also be activation churn, which the offline replay cannot see: there
  binds come only from the change-log events it injects).
Before the replay every license is created through the vendor API (one product per simulated
product, seats = the license's installs, 6 for the ip_mismatch victim), revoked ones revoked,
and each install checks once in turn, so that the genuine sites hold the seats and a foreign
site is refused as in the simulation. Churn and moves are replayed through the API too: a
release frees the license's domains (`release_binding`), a reissue reissues; the following
check from a new site binds.

Each check is a POST /api/v1/verify with the simulated domain, reported `ip`, client version
and a fresh nonce, and `X-Forwarded-For: <simulated source address>`: the server must trust
the replaying host as a proxy (`LICENSE_SERVER_PROXY_TRUSTED_PROXIES=127.0.0.1/32` when it
runs on the same machine), or every check comes from one address. Run the server with rate
limiting off or raised (`LICENSE_SERVER_RATE_LIMIT_ENABLED=false`): at replay speed the per-key
limit refuses a foreign site's retries as `rate_limited` rather than `seat_limit`, and those
are no domain-mismatch refusals (the count of 429 answers is printed).

Only alerts seen since the replay began count (a server may keep an earlier run's).
Unknown keys are sent as `NOPE-<hex of the simulated key hash>` (the same forged key from many
networks is one string: one fingerprint on the server). Alerts are then read through the
vendor API (`api_client.VendorApi`, state "all") until two reads `SETTLE_STEP` s apart agree
(at most `--settle` s), and compared with the injected attacks: license subjects by the
server's license ids, networks as they are, a forged-key fingerprint by its sample networks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import secrets
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import aiohttp

from license_server.api_client import VendorApi
from license_server.licensing.specs import LicenseSpec, ProductSpec

ROOT = Path(__file__).resolve().parent.parent
NORMAL_PER_LICENSE = 15
NORMAL_OF_VICTIM = 10
ATTACK_PER_LICENSE = 45
PER_FOREIGN_SITE = 3
FLOOD_MIN, FLOOD_MAX = 150, 200
GUESSES_MAX = 100
MAX_SITES = 5
CHURN_MOVES, CHURN_SEATS = 6, 8
CONCURRENCY = 16
T0_MS = 1_893_456_000_000  # simulate.T0
SETTLE_STEP = 2.0


def run(sim, args: argparse.Namespace) -> tuple[dict[str, set[str]], dict[str, set[str]], int]:
    api_key = args.api_key or make_api_key(args.database)
    return asyncio.run(Replay(sim, args.url, api_key, args.settle).run())


def make_api_key(database: str | None) -> str:
    """`run.py create-api-key` against the server's database; the key is its last line."""
    if not database:
        raise SystemExit("--url needs --api-key, or --database to make one with run.py")
    import os

    env = {**os.environ, "LICENSE_SERVER_DATABASE": str(database)}
    out = subprocess.run(  # nosec B603: our own run.py, fixed arguments
        [sys.executable, str(ROOT / "run.py"), "create-api-key", "--name", "simulate.py",
         "--scopes", "*"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]


def spread(items: list, n: int) -> list:
    """At most `n` of `items`, evenly spaced, in order."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


class Replay:
    def __init__(self, sim, url: str, api_key: str, settle: float) -> None:
        self.sim = sim
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.settle = settle
        self.tag = secrets.token_hex(3)  # products of this run: never one of an earlier run
        self.ids: dict[int, int] = {}  # simulated license id -> server's
        self.keys: dict[int, str] = {}
        self.sent = 0
        self.limited = 0

    # -- the sample --------------------------------------------------------------------------

    def timeline(self) -> list:
        """(at_ms, order, action) in time order: checks and API actions (releases, binds)."""
        sim = self.sim
        attempts = sorted((a for slot in sim.events.values() for a in slot), key=lambda a: a.at_ms)
        kind_of = sim.attack_of
        per_license: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        unknown: dict[str, list] = defaultdict(list)  # guesses per /24; the rest as they are
        for a in attempts:
            kind = kind_of.get(id(a), "")
            if a.license_id is None:
                guess = kind == "key_guessing" and len(a.key_hash or b"") != 32
                unknown[a.source_ip.rsplit(".", 1)[0] if guess else ""].append(a)
            else:
                per_license[a.license_id][kind].append(a)
        chosen = []
        for by_kind in per_license.values():
            normal = by_kind.pop("", [])
            if not by_kind:
                chosen += spread(normal, NORMAL_PER_LICENSE)
                continue
            chosen += spread(normal, NORMAL_OF_VICTIM)
            for kind, some in by_kind.items():
                if kind == "check_flooding":
                    while len(some) < FLOOD_MIN:
                        some = sorted(some + some, key=lambda a: a.at_ms)
                    chosen += spread(some, FLOOD_MAX)
                elif kind == "key_sharing":
                    per_site: dict[str, list] = defaultdict(list)
                    for a in some:
                        per_site[a.domain].append(a)
                    chosen += [a for site in per_site.values() for a in site[:PER_FOREIGN_SITE]]
                elif kind == "ip_mismatch":
                    chosen += self._relayed(some)
                else:
                    chosen += spread(some, ATTACK_PER_LICENSE)
        for network, some in unknown.items():
            chosen += spread(some, GUESSES_MAX) if network else some
        events = [(a.at_ms, 1, ("check", a)) for a in chosen]
        churned = sim.victims["activation_churn"]
        moves: dict[int, int] = defaultdict(int)
        for at_s, lid, kind in sorted(sim.binds):
            if not T0_MS <= at_s * 1000 < sim.end:
                continue
            if lid in churned and kind == "release":
                moves[lid] += 1
            if moves[lid] > CHURN_MOVES:
                continue
            if kind in ("release", "reissue"):
                events.append((at_s * 1000, 0, (kind, lid)))
            elif lid in churned:  # the key's next site: its first check binds
                lic = sim.world.licenses[lid - 1]
                site = sim.world.install()
                check = replace(sim.check(lic, site, at_s * 1000), domain=site.domain)
                events.append((at_s * 1000, 1, ("check", check)))
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _relayed(self, some: list) -> list:
        lic = self.sim.world.licenses[some[0].license_id - 1]
        own = {inst.domain for inst in lic.installs}
        relayed = list(dict.fromkeys(a.domain for a in some if a.domain not in own))
        keep = set(relayed[: MAX_SITES - len(own)])
        return spread([a for a in some if a.domain in own or a.domain in keep], ATTACK_PER_LICENSE)

    # -- talking to the server ---------------------------------------------------------------

    async def run(self) -> tuple[dict[str, set[str]], dict[str, set[str]], int]:
        timeline = self.timeline()
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        async with (
            aiohttp.ClientSession() as session,
            VendorApi(self.url, self.api_key, session=session, max_wait=5) as api,
        ):
            await self.create(api)
            self.session = session
            self.limit = asyncio.Semaphore(CONCURRENCY)
            await self.prebind()
            batch: list = []
            for _, _, (what, item) in timeline:
                if what == "check":
                    batch.append(item)
                    if len(batch) >= CONCURRENCY * 4:
                        await self.send(batch)
                        batch = []
                    continue
                await self.send(batch)
                batch = []
                await self.action(api, what, item)
            await self.send(batch)
            alerts = await self.settled_alerts(api, started)
        if self.limited:
            print(f"warning: {self.limited} checks were refused by a rate limit (429)")
        return self.judge(alerts), self.truth(), self.sent

    async def create(self, api: VendorApi) -> None:
        sim = self.sim
        codes = {}
        for product in sorted({lic.product for lic in sim.world.licenses}):
            code = f"{product}-{self.tag}"
            await api.create_product(ProductSpec(code=code, name=f"{product} (simulated)"))
            codes[product] = code
        ip_victims = sim.victims["ip_mismatch"]

        async def one(lic) -> None:
            installs = {inst.domain for inst in lic.installs}
            seats = max(1, len(installs))
            if lic.id in ip_victims:
                seats = 6  # as the simulation: relayed installs are no refusals
            elif lic.id in sim.victims["activation_churn"]:
                seats = CHURN_SEATS
            async with self.limit_api:
                made = await api.create_license(
                    LicenseSpec(
                        product=codes[lic.product],
                        email=f"sim{lic.id}@example.com",
                        licensee=f"Simulated customer {lic.id}",
                        seats=seats,
                    )
                )
                self.ids[lic.id] = made.id
                self.keys[lic.id] = made.license_key
                if lic.status == "revoked":
                    await api.revoke(made.id)

        self.limit_api = asyncio.Semaphore(8)
        await asyncio.gather(*(one(lic) for lic in sim.world.licenses))

    async def prebind(self) -> None:
        """Each install of an active license checks once, in turn: genuine sites take the
        seats first, as they had before the simulated period began."""
        first = []
        for lic in self.sim.world.licenses:
            if lic.status != "revoked":
                for inst in lic.installs:
                    check = self.sim.check(lic, inst, self.sim.end)
                    first.append(replace(check, domain=inst.domain))
        await self.send(first)

    async def action(self, api: VendorApi, what: str, sim_id: int) -> None:
        lid = self.ids[sim_id]
        if what == "reissue":
            await api.reissue(lid)
            return
        for binding in await api.bindings(lid):  # a release: the key moves on
            if binding.kind == "domain":
                await api.release_binding(lid, "domain", binding.value)

    async def send(self, attempts: list) -> None:
        await asyncio.gather(*(self.verify(a) for a in attempts))

    async def verify(self, a) -> None:
        if a.license_id is not None:
            key = self.keys[a.license_id]
        else:
            key = "NOPE-" + (a.key_hash or b"").hex().upper()
        form = {
            "license_key": key,
            "domain": a.domain,
            "nonce": secrets.token_urlsafe(16),
            "client_version": a.client_version,
        }
        if a.reported_ip:
            form["ip"] = a.reported_ip
        async with (
            self.limit,
            self.session.post(
                f"{self.url}/api/v1/verify",
                data=form,
                headers={"X-Forwarded-For": a.source_ip},
            ) as response,
        ):
            await response.read()
            if response.status == 429:
                self.limited += 1
            elif response.status != 200:
                raise SystemExit(f"verify answered {response.status}: {await response.text()}")
        self.sent += 1

    async def settled_alerts(self, api: VendorApi, since: dt.datetime) -> list:
        """The server's alerts once two reads SETTLE_STEP s apart agree (the alert task
        writes what the detectors found within a few seconds), at most `settle` s. Only
        alerts seen since the replay began: an earlier run's are not this run's."""
        deadline = time.monotonic() + self.settle
        previous = None
        while True:
            alerts = [a async for a in api.alerts(state="all", since=since)]
            seen = sorted((a.id, a.occurrences) for a in alerts)
            if seen == previous or time.monotonic() >= deadline:
                return alerts
            previous = seen
            await asyncio.sleep(SETTLE_STEP)  # bounded: the server's task, not a test's clock

    # -- precision and recall --------------------------------------------------------------

    def judge(self, alerts: list) -> dict[str, set[str]]:
        back = {server: sim_id for sim_id, server in self.ids.items()}
        families = self.families()
        found: dict[str, set[str]] = defaultdict(set)
        for alert in alerts:
            subject = alert.subject
            if subject.startswith("license:"):
                sim_id = back.get(alert.license_id or int(subject.split(":", 1)[1]))
                if sim_id is None:
                    continue  # not a license of this run
                subject = f"license:{sim_id}"
            elif subject.startswith("key:"):
                shown = set(alert.evidence.get("sample_networks", ()))
                subject = next((name for name, nets in families.items() if shown & nets), subject)
            found[alert.detector].add(subject)
        return found

    def families(self) -> dict[str, set[str]]:
        """The truth's forged-key subjects, each with the /24s it was tried from."""
        out: dict[str, set[str]] = {}
        for slot in self.sim.events.values():
            for a in slot:
                if a.license_id is None and a.key_hash and len(a.key_hash) == 32:
                    net = re.sub(r"\.\d+$", ".0/24", a.source_ip)
                    out.setdefault("key:" + a.key_hash[:6].hex(), set()).add(net)
        return out

    def truth(self) -> dict[str, set[str]]:
        return self.sim.truth

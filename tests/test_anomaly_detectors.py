"""The attempt detectors: per detector a scenario that must alert and a near miss that must not.

Attempts carry an injected clock (`at_ms`) and go through a real AttemptLog (committed to the
store under test, then observed), the alerts through `Alerts.raise_` into the alerts table.
"""

from __future__ import annotations

import json

import pytest

from license_server.db import webhooks as webhook_rows
from license_server.licensing.specs import LicenseSpec
from tests import store_helpers
from tests.anomaly_helpers import HOUR, MINUTE, T0, Rig, attempt, by_detector
from tests.conftest import PRODUCT


async def issue(runtime, seats: int | None = None) -> int:
    await runtime.licenses.create_product(PRODUCT)  # 2 seats
    license, _ = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="A", email="a@example.org", seats=seats)
    )
    return license.id


# -- key sharing ------------------------------------------------------------------------------


async def test_a_license_used_by_more_sites_than_its_seats_allow_alerts(runtime):
    lid = await issue(runtime)  # 2 seats: alert above 2 + 2 sites
    sites = ["one.com", "two.net", "shop.co.uk", "four.org", "five.io"]
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i * HOUR, license_id=lid, domain=d, source_ip="203.0.113.5")
            for i, d in enumerate(sites)
        )
        (alert,) = by_detector(await rig.alerts(), "key_sharing")
    assert alert["subject"] == f"license:{lid}" and alert["license_id"] == lid
    assert alert["severity"] == "high"
    assert "5 different websites" in alert["summary"] and "2 seats" in alert["summary"]
    assert alert["evidence"]["sites"] == 5 and alert["evidence"]["seats"] == 2
    assert set(alert["evidence"]["sample_sites"]) == set(sites)
    assert len(alert["evidence"]["sample_attempt_ids"]) == 5


async def test_subdomains_of_one_registrable_domain_and_dev_hosts_are_one_site(runtime):
    lid = await issue(runtime)
    hosts = [
        "a.shop.co.uk", "b.shop.co.uk", "www.c.shop.co.uk", "other.com", "staging.other.com",
        "third.net", "localhost", "10.0.0.5", "x.test",
    ]  # fmt: skip
    async with Rig(runtime) as rig:
        await rig.send(attempt(T0 + i, license_id=lid, domain=h) for i, h in enumerate(hosts))
        assert by_detector(await rig.alerts(), "key_sharing") == []
    # Four sites are within 2 seats + 2: no alert either (the near miss).


async def test_many_source_networks_alert_and_sites_outside_the_window_do_not(runtime):
    lid = await issue(runtime, seats=1)  # networks above 1 + 3
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0, license_id=lid, domain="shop.com", source_ip=f"198.51.{i}.7")
            for i in range(4)
        )
        assert by_detector(await rig.alerts(), "key_sharing") == []
        # A fifth network a day and more later: the first four have left the window.
        await rig.send([attempt(T0 + 25 * HOUR, license_id=lid, source_ip="198.51.99.7")])
        assert by_detector(await rig.alerts(), "key_sharing") == []
        await rig.send(
            attempt(T0 + 25 * HOUR + i, license_id=lid, source_ip=f"2001:db8:{i}::1")
            for i in range(4)
        )
        (alert,) = by_detector(await rig.alerts(), "key_sharing")
    assert alert["evidence"]["networks"] == 5
    assert "5 different networks" in alert["summary"]
    assert "2001:db8::/48" in alert["evidence"]["sample_networks"]  # shown as the access log


async def test_a_license_with_many_seats_is_not_sharing(runtime):
    lid = await issue(runtime, seats=10)
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i, license_id=lid, domain=f"site{i}.com", source_ip=f"198.51.{i}.7")
            for i in range(12)
        )
        assert by_detector(await rig.alerts(), "key_sharing") == []
        await rig.send(  # 13 > 10 + 2
            [attempt(T0 + 99, license_id=lid, domain="site99.com", source_ip="198.51.1.7")]
        )
        assert len(by_detector(await rig.alerts(), "key_sharing")) == 1


# -- key guessing -----------------------------------------------------------------------------


async def test_many_unknown_keys_from_one_network_alert(runtime):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(
                T0 + i * 1000,
                source_ip=f"203.0.113.{i % 3 + 1}",
                product="",
                result="invalid",
                reason="unknown_key" if i % 2 else "bad_signature",
                key_hash=bytes([i]) * 32,
            )
            for i in range(30)
        )
        (alert,) = by_detector(await rig.alerts(), "key_guessing")
    assert alert["subject"] == "net:203.0.113.0/24" and alert["license_id"] is None
    assert "30 checks with unknown or forged license keys" in alert["summary"]
    assert alert["evidence"]["addresses"] == 3
    assert len(alert["evidence"]["sample_attempt_ids"]) == 5


async def test_guesses_spread_over_more_than_the_window_do_not_alert(runtime):
    async with Rig(runtime) as rig:
        for burst in range(3):  # 20 guesses every 11 minutes: never 30 within 10 minutes
            await rig.send(
                attempt(
                    T0 + burst * 11 * MINUTE + i,
                    product="",
                    result="invalid",
                    reason="unknown_key",
                    key_hash=bytes([burst, i]) * 16,
                )
                for i in range(20)
            )
        assert by_detector(await rig.alerts(), "key_guessing") == []


async def test_guesses_refused_by_the_rate_limiter_count(runtime):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i, product="", result="rate_limited", reason="unknown-key-per-ip")
            for i in range(30)
        )
        assert len(by_detector(await rig.alerts(), "key_guessing")) == 1


@pytest.mark.parametrize(("networks", "alerts"), [(5, 1), (4, 0)])
async def test_one_unknown_key_from_many_networks_alerts(runtime, networks, alerts):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(
                T0 + i,
                source_ip=f"198.51.{i}.9",
                product="",
                result="invalid",
                reason="unknown_key",
                key_hash=b"\x07" * 32,
            )
            for i in range(networks)
        )
        found = by_detector(await rig.alerts(), "key_guessing")
    assert len(found) == alerts
    if alerts:
        assert found[0]["subject"] == "key:" + "07" * 6
        assert "from 5 different networks" in found[0]["summary"]


# -- domain mismatch, flooding, persistence ---------------------------------------------------


@pytest.mark.parametrize(("refusals", "alerts"), [(30, 1), (29, 0)])
async def test_a_burst_of_domain_refusals_alerts(runtime, refusals, alerts):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(
                T0 + i * MINUTE,
                license_id=7,
                domain=f"pirate{i % 3}.com",
                result="invalid",
                reason="seat_limit" if i % 2 else "domain_not_allowed",
            )
            for i in range(refusals)
        )
        found = by_detector(await rig.alerts(), "domain_mismatch")
    assert len(found) == alerts
    if alerts:
        assert "in the last hour because" in found[0]["summary"]
        assert found[0]["summary"].startswith("This license was refused 30 times")
        assert set(found[0]["evidence"]["sample_domains"]) == {
            "pirate0.com", "pirate1.com", "pirate2.com"
        }  # fmt: skip


@pytest.mark.parametrize(("checks", "alerts"), [(61, 1), (60, 0)])
async def test_check_flooding_by_the_absolute_rule(runtime, checks, alerts):
    async with Rig(runtime) as rig:
        await rig.send(attempt(T0 + i * 50_000, license_id=7) for i in range(checks))
        found = by_detector(await rig.alerts(), "check_flooding")
    assert len(found) == alerts
    if alerts:
        assert "checked 61 times in an hour" in found[0]["summary"]


async def test_rate_limited_checks_of_a_license_count_toward_flooding(runtime):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i, license_id=7, product="", result="rate_limited", reason="per-key")
            for i in range(61)
        )
        assert len(by_detector(await rig.alerts(), "check_flooding")) == 1


@pytest.mark.parametrize(
    ("result", "checks", "alerts"),
    [("revoked", 20, 1), ("suspended", 20, 1), ("revoked", 19, 0), ("banned", 20, 0)],
)
async def test_a_revoked_or_suspended_key_that_keeps_checking_in(runtime, result, checks, alerts):
    status, reason = ("suspended", "banned") if result == "banned" else (result, result)
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i * 10 * MINUTE, license_id=7, result=status, reason=reason)
            for i in range(checks)
        )
        found = by_detector(await rig.alerts(), "persistence")
    assert len(found) == alerts
    if alerts:
        assert f"This license is {result} but still checked in 20 times" in found[0]["summary"]


# -- reported IP, client versions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "matched_install", "alerts"),
    [("198.51.100.9", False, 1), ("198.51.100.9", True, 0), ("10.0.0.9", False, 0)],
)
async def test_reported_ip_never_matching_the_source(runtime, reported, matched_install, alerts):
    async with Rig(runtime) as rig:
        sent = [
            attempt(T0 + i, license_id=7, domain=f"site{i}.com", reported_ip=reported)
            for i in range(3)
        ]
        if matched_install:
            sent.insert(0, attempt(T0, license_id=7, domain="ok.com", reported_ip="203.0.113.5"))
        await rig.send(sent)
        found = by_detector(await rig.alerts(), "ip_mismatch")
    assert len(found) == alerts
    if alerts:
        assert "On 3 installs of this license" in found[0]["summary"]


async def test_unknown_client_versions_alert(runtime):
    async with Rig(runtime) as rig:
        await rig.send(
            attempt(T0 + i, license_id=7, client_version="n/a-cracked") for i in range(4)
        )
        assert by_detector(await rig.alerts(), "client_version") == []
        await rig.send([attempt(T0 + 9, license_id=7, client_version="n/a-cracked")])
        (alert,) = by_detector(await rig.alerts(), "client_version")
    assert "does not recognise" in alert["summary"] and alert["severity"] == "low"


@pytest.mark.parametrize(("version", "alerts"), [("1.9.3", 1), ("2.0", 0), ("", 0)])
async def test_versions_below_the_minimum_alert(runtime, version, alerts):
    async with Rig(runtime, client_version_minimum="2.0") as rig:
        await rig.send(attempt(T0 + i, license_id=7, client_version=version) for i in range(5))
        assert len(by_detector(await rig.alerts(), "client_version")) == alerts


async def test_versions_far_behind_the_fleets_majority_are_old(runtime):
    async with Rig(runtime) as rig:
        fleet = [attempt(T0 + i, license_id=100 + i, client_version="5.1.0") for i in range(150)]
        await rig.send(fleet)
        await rig.alerts()  # the alert task learns the fleet's major (5)
        await rig.send(attempt(T0 + 200 + i, license_id=7, client_version="4.9") for i in range(5))
        assert by_detector(await rig.alerts(), "client_version") == []  # one behind: fine
        await rig.send(attempt(T0 + 300 + i, license_id=8, client_version="3.2") for i in range(5))
        (alert,) = by_detector(await rig.alerts(), "client_version")
    assert alert["subject"] == "license:8" and "most installs run version 5" in alert["summary"]


# -- re-firing, switches ------------------------------------------------------------------------


async def test_a_sustained_attack_is_one_alert_raised_at_most_once_a_minute(runtime):
    async with Rig(runtime) as rig:
        for second in range(0, 180, 10):  # 3 minutes of guessing, 40 a batch
            await rig.send(
                attempt(T0 + second * 1000 + i, product="", result="invalid", reason="unknown_key")
                for i in range(40)
            )
            await rig.alerts()
        (alert,) = by_detector(await rig.alerts(), "key_guessing")
    assert alert["occurrences"] == 3  # at 0 s, 60 s, 120 s


async def test_a_detector_switched_off_does_not_alert(runtime):
    async with Rig(runtime, flooding_enabled=False) as rig:
        await rig.send(attempt(T0 + i, license_id=7) for i in range(100))
        assert by_detector(await rig.alerts(), "check_flooding") == []


# -- accepted checks skip the detectors that cannot count them (issue #16) ----------------------


def test_detectors_that_skip_accepted_checks_never_count_one():
    """The engine hands an attempt whose reason is "ok" only to detectors with `counts_ok`;
    every other detector must indeed ignore every such attempt, whatever its result, key hash
    or addresses, or the shortcut would change what is detected."""
    from license_server.anomaly.engine import AnomalyEngine
    from license_server.settings import AnomalySettings

    engine = AnomalyEngine(AnomalySettings())
    skipping = [x for x in engine.detectors if not x.counts_ok]
    assert {x.name for x in skipping} == {"key_guessing", "domain_mismatch", "persistence"}
    for detector in skipping:
        for n in range(2_000):
            detector.observe(
                attempt(
                    T0 + n,
                    license_id=n % 3 + 1,
                    result=("active", "revoked", "suspended", "rate_limited", "invalid")[n % 5],
                    reason="ok",
                    key_hash=bytes([n % 7]) * 32,
                    source_ip=f"203.0.{n % 250}.9",
                    domain=f"site{n % 40}.example.com",
                )
            )
        state = [getattr(detector, name) for name in vars(detector)]
        windows = [s for s in state if hasattr(s, "items") and hasattr(s, "sweep")]
        windows += [s for s in state if hasattr(s, "count") and hasattr(s, "sweep")]
        assert windows and all(len(w) == 0 for w in windows), detector.name
    assert not engine.ctx.findings


def test_an_accepted_check_reaches_only_the_detectors_that_count_it():
    from license_server.anomaly.engine import AnomalyEngine
    from license_server.settings import AnomalySettings

    engine = AnomalyEngine(AnomalySettings())
    seen: list[str] = []
    for detector in engine.detectors:
        detector.observe = lambda a, name=detector.name: seen.append(name)  # type: ignore[method-assign]
    engine._observers = tuple(x.observe for x in engine.detectors)
    engine._ok_observers = tuple(x.observe for x in engine.detectors if x.counts_ok)
    engine.feed(attempt(T0, license_id=1, reason="ok"))
    assert sorted(seen) == ["check_flooding", "client_version", "ip_mismatch", "key_sharing"]
    seen.clear()
    engine.feed(attempt(T0, license_id=1, result="revoked", reason="revoked"))
    assert len(seen) == len(engine.detectors) == 7


# -- an alert storm (issue #16) -----------------------------------------------------------------


async def test_a_round_of_many_findings_is_a_few_statements(runtime, monkeypatch):
    """A thousand licenses flooding at once (issue #16's bench) made ~4 statements per alert
    (its samples, the upsert, the webhook subscribers, the event) while the round held the
    write lock the attempt log waits for; now a round is a few statements however many it
    finds, with every alert, its samples and its alert.raised event as before."""
    async with runtime.db.write() as conn:
        await webhook_rows.insert_endpoint(
            conn, url="https://hooks.example.com/alerts", description="", enabled=True,
            events=json.dumps(["alert.raised"]), created_by="test", now_ms=T0,
        )  # fmt: skip
    licenses = range(1, 451)
    async with Rig(runtime, flooding_checks_per_hour=3) as rig:
        await rig.send(attempt(T0 + i, license_id=lid) for lid in licenses for i in range(4))
        statements = store_helpers.CountedStatements(runtime.db, monkeypatch)
        found = by_detector(await rig.alerts(), "check_flooding")
    # 450 findings, raised in batches of 200: per batch one samples read, one upsert, the
    # subscribers, the events and their deliveries (and the round's own housekeeping reads).
    assert statements.count <= 20, statements.by_statement()
    assert sorted(row["license_id"] for row in found) == list(licenses)
    logged = {
        row["id"]: row["license_id"]
        for row in await store_helpers.rows(runtime.db, "verification_attempts")
    }
    for row in found:
        samples = row["evidence"]["sample_attempt_ids"]
        assert len(samples) == 4 and {logged[i] for i in samples} == {row["license_id"]}
    events = await store_helpers.rows(runtime.db, "webhook_events")
    deliveries = await store_helpers.rows(runtime.db, "webhook_deliveries")
    assert sorted(json.loads(e["payload"])["data"]["alert_id"] for e in events) == sorted(
        row["id"] for row in found
    )
    assert len(deliveries) == len(events) == 450

"""The detectors under hostile input (bounded memory) and the learned baseline.

These drive the engine's observer directly (no store): what is asserted is memory and
arithmetic, the same whichever store logged the attempts.
"""

from __future__ import annotations

from license_server.anomaly import sites
from license_server.anomaly.baseline import usual
from license_server.anomaly.engine import AnomalyEngine, max_window_ms
from license_server.anomaly.windows import WindowCounter, WindowSet
from license_server.settings import AnomalySettings
from tests.anomaly_helpers import HOUR, MINUTE, T0, attempt


def engine(**settings) -> AnomalyEngine:
    return AnomalyEngine(AnomalySettings(**settings))


def tracked(e: AnomalyEngine) -> list[int]:
    """The size of every map the detectors keep."""
    sizes = [len(e.ctx.products), len(e.ctx.seats), len(e._hour_counts), len(e.ctx._fired)]
    for detector in e.detectors:
        for value in vars(detector).values():
            if isinstance(value, WindowCounter | WindowSet | dict):
                sizes.append(len(value))
    return sizes


def test_a_flood_of_distinct_networks_keys_and_licenses_stays_within_the_caps():
    e = engine(max_tracked=1000)
    for i in range(60_000):
        e.feed(
            attempt(
                T0 + i,
                source_ip=f"{10 + i % 200}.{i // 200 % 250}.{i % 7}.1",
                license_id=i if i % 2 else None,
                domain=f"site{i}.example.com",
                reported_ip=f"198.51.{i % 250}.{i % 200}",
                result="invalid",
                reason="unknown_key" if i % 2 == 0 else "seat_limit",
                key_hash=i.to_bytes(8, "big"),
                client_version=f"{i}.0-x{i}",
            )
        )
    assert max(tracked(e)) <= 1000
    guessing = next(d for d in e.detectors if d.name == "key_guessing")
    assert guessing.guesses.evicted > 0 and guessing.families.evicted > 0
    assert len(e.ctx.findings) <= 10_000


def test_hostile_texts_do_not_break_the_detectors():
    e = engine()
    odd = ["\ud800", "x" * 100_000, "999999999999999999.1", "1.2.3.4.5.6", "../..", "\x00", ""]
    for i, text in enumerate(odd * 20):
        e.feed(
            attempt(
                T0 + i,
                license_id=1,
                domain=text[:253],
                source_ip=text,
                reported_ip=text,
                client_version=text,
                result="invalid",
                reason="unknown_key",
                key_hash=text.encode("utf-8", "surrogatepass")[:32] or None,
            )
        )
    e.housekeeping()
    findings = e.take_findings()
    assert findings  # guessing, client versions: they did fire
    # Key-sharing findings are worded by the alert task, once it knows the seats.
    assert all(len(f.summary) < 2000 for f in findings)
    assert all(f.summary for f in findings if f.detector != "key_sharing")


def test_the_windows_slide():
    counter: WindowCounter[str] = WindowCounter(10 * MINUTE, 10)
    for i in range(30):
        counter.add("net", T0 + i * MINUTE)
    assert counter.count("net", T0 + 29 * MINUTE) in (10, 11)  # exact to one bucket
    assert counter.sweep(T0 + 60 * MINUTE) == 1 and len(counter) == 0


def test_median_and_mad_ignore_a_few_extremes():
    stats = usual([2, 3, 3, 4, 2, 3, 4, 3, 500, 900])
    assert stats.median == 3 and stats.mad == 1
    assert stats.limit(6) == 9  # the MAD counts as at least 1
    assert stats.words("check {} times an hour") == (
        "licenses of this product usually check 3–4 times an hour"
    )


def _hour_of_checks(e: AnomalyEngine, hour: int, per_license: dict[int, int]) -> None:
    for lid, n in per_license.items():
        for i in range(n):
            e.feed(attempt(T0 + hour * HOUR + i * (HOUR // (n + 1)), license_id=lid))


def test_the_learned_baseline_raises_the_bar_for_a_busy_product():
    e = engine(refire_seconds=1)
    busy = {lid: 95 + lid % 11 for lid in range(1, 31)}  # 95-105 checks an hour each
    for hour in range(3):
        _hour_of_checks(e, hour, busy)
        e.housekeeping()
    e.take_findings()  # the absolute rule (60) alone would flag every one of them
    stats = e.ctx.baseline.get("mymod")
    assert stats is not None and 97 <= stats.median <= 103
    _hour_of_checks(e, 3, {500: 110})  # a little above usual: not flooding
    assert [f for f in e.take_findings() if f.subject == "license:500"] == []
    _hour_of_checks(e, 4, {501: 240})
    found = next(f for f in e.take_findings() if f.subject == "license:501")
    assert "checked " in found.summary and "licenses of this product usually check" in found.summary
    assert found.evidence["product_median_per_hour"] == stats.median


def test_rebuild_reads_at_most_the_longest_window():
    assert max_window_ms(AnomalySettings()) == 24 * HOUR
    assert max_window_ms(AnomalySettings(key_sharing_enabled=False, ip_mismatch_enabled=False)) == (
        6 * HOUR
    )


def test_sites_are_registrable_domains_from_the_bundled_list():
    assert sites.site_of("a.shop.co.uk") == sites.site_of("b.shop.co.uk") == "shop.co.uk"
    assert sites.site_of("alice.github.io") != sites.site_of("bob.github.io")
    assert sites.site_of("localhost") is None and sites.site_of("192.168.1.9") is None
    assert sites.site_of("198.51.100.7") == "198.51.100.0/24"
    assert sites.network_of("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert sites.display_network("2001:db8:1:2::/64") == "2001:db8:1::/48"

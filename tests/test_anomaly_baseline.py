"""The incremental baseline (histograms per product) gives exactly what the sort over every
pooled sample gave, and the alert task's housekeeping yields to the loop between its steps."""

from __future__ import annotations

import random

from license_server.anomaly.baseline import MAX_SAMPLES_PER_HOUR, Baseline, usual
from license_server.anomaly.engine import AnomalyEngine
from license_server.settings import AnomalySettings
from tests.anomaly_helpers import attempt


def _reference(hours: list[dict[str, list[int]]], keep: int, minimum: int) -> dict:
    """The previous recompute: thin each hour, pool the last `keep` hours, sort."""
    pooled: dict[str, list[float]] = {}
    for hour in hours[-keep:]:
        for product, counts in hour.items():
            step = max(1, len(counts) // MAX_SAMPLES_PER_HOUR)
            pooled.setdefault(product, []).extend(counts[::step])
    return {p: usual(v) for p, v in pooled.items() if len(v) >= minimum}


def test_incremental_baseline_equals_the_full_recompute_hour_after_hour():
    rng = random.Random(7)
    baseline = Baseline(hours=5, min_samples=20)
    hours: list[dict[str, list[int]]] = []
    for n in range(14):
        hour = {
            "mymod": [rng.choice((1, 1, 2, 2, 3, 4, 90)) for _ in range(rng.randrange(10, 60))],
            "tiny": [rng.randrange(0, 7) for _ in range(rng.randrange(0, 12))],
        }
        if n % 4 == 3:
            hour["big"] = [rng.randrange(1, 30) for _ in range(MAX_SAMPLES_PER_HOUR * 2 + 3)]
        hours.append(hour)
        baseline.add_hour(hour)
        assert baseline.by_product == _reference(hours, 5, 20), n
    assert baseline.samples("mymod") == sorted(x for hour in hours[-5:] for x in hour["mymod"])


def test_an_hour_leaving_the_window_takes_its_samples_with_it():
    baseline = Baseline(hours=2, min_samples=3)
    baseline.add_hour({"p": [100, 100, 100]})
    assert baseline.get("p").median == 100
    baseline.add_hour({"p": [1, 2, 3]})
    baseline.add_hour({"q": [5, 5, 5]})  # the 100s are out
    assert baseline.get("p") == usual([1, 2, 3])
    baseline.add_hour({"q": [5]})
    assert baseline.get("p") is None  # nothing of p left in the window
    assert baseline.samples("p") == []


async def test_housekeep_yields_between_steps_and_ends_where_housekeeping_does():
    """Two engines fed the same day: the stepwise (alert task) and whole (simulator) runs learn
    the same baseline; the stepwise one gave the loop back more than once."""
    settings = AnomalySettings()
    stepwise, whole = AnomalyEngine(settings), AnomalyEngine(settings)
    t0 = 1_893_456_000_000
    batch = [
        attempt(at_ms=t0 + hour * 3_600_000 + lid * 7, license_id=lid, product="mymod")
        for hour in range(3)
        for lid in range(1, 120)
        for _ in range(1 + lid % 3)
    ]
    steps = 0
    for engine in (stepwise, whole):
        engine.observe(batch)
    for _ in stepwise.housekeeping_steps():
        steps += 1
    whole.housekeeping()
    assert steps >= 3  # two closed hours and the sweeps: each its own step
    assert stepwise.ctx.baseline.by_product == whole.ctx.baseline.by_product
    assert stepwise.ctx.baseline.get("mymod").median == 2.0
    await stepwise.housekeep()  # nothing left: returns without error


def test_a_stepwise_sweep_drops_what_the_detectors_sweep_drops():
    """Every detector's window maps, swept a slice at a time, end as its own `sweep` leaves
    them (the engine sweeps the maps it finds on the detector: none may be missed)."""
    t0 = 1_893_456_000_000
    fed = [
        attempt(
            t0 + i * 90_000,
            license_id=1 + i % 40,
            domain=f"site{i % 13}.com",
            source_ip=f"198.51.{i % 50}.7",
            reported_ip=f"203.0.{i % 9}.1",
            client_version="0.1" if i % 5 else "3.0",
            result="revoked" if i % 7 == 0 else "active",
            key_hash=None,
        )
        for i in range(400)
    ]
    fed += [
        attempt(
            t0 + i,
            product="",
            result="invalid",
            reason="unknown_key",
            key_hash=bytes([i]) * 32,
            source_ip=f"192.0.{i}.1",
        )
        for i in range(60)
    ]
    whole, stepwise = AnomalyEngine(AnomalySettings()), AnomalyEngine(AnomalySettings())
    for engine in (whole, stepwise):
        engine.observe(sorted(fed, key=lambda a: a.at_ms))
    now = t0 + 30 * 3_600_000
    for detector in whole.detectors:
        detector.sweep(now)
    for detector in stepwise.detectors:
        for window in stepwise._window_maps(detector):
            for _ in window.sweep_steps(now):
                pass
    for mine, theirs in zip(stepwise.detectors, whole.detectors, strict=True):
        for name, value in vars(mine).items():
            if hasattr(value, "_entries"):
                assert value._entries == getattr(theirs, name)._entries, (mine.name, name)


def test_an_entry_renewed_between_two_slices_of_a_sweep_is_kept(monkeypatch):
    from license_server.anomaly import windows

    monkeypatch.setattr(windows, "SWEEP_SLICE", 2)
    counter = windows.WindowCounter(1000, 100)
    for key in "abcdef":
        counter.add(key, 0)
    steps = counter.sweep_steps(5000)
    next(steps)  # a and b examined: gone
    counter.add("e", 4999)  # renewed before its slice
    for _ in steps:
        pass
    assert set(counter._entries) == {"e"}

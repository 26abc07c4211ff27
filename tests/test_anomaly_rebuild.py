"""The start-up rebuild runs beside a serving server: it gives the loop back while it replays,
holds the batches committed meanwhile and feeds them afterwards (not quietly), and learns
exactly what feeding the same attempts live would have. Injected clocks, both stores."""

from __future__ import annotations

import asyncio

from license_server.anomaly import engine as engine_module
from license_server.anomaly.engine import AnomalyEngine
from license_server.licensing.attempt_log import AttemptLog
from license_server.settings import AnomalySettings
from tests.anomaly_helpers import MINUTE, T0, alerts, attempt, by_detector


def guess(at_ms: int, n: int, network: str = "203.0.113"):
    return attempt(
        at_ms,
        source_ip=f"{network}.{n % 200 + 1}",
        product="",
        result="invalid",
        reason="unknown_key",
        key_hash=n.to_bytes(4, "big") * 8,
    )


async def logged(runtime, attempts) -> None:
    log = AttemptLog(runtime.db)
    log.start()
    try:
        await asyncio.gather(*(log.append(a) for a in attempts))
    finally:
        await log.stop()


def engine_at(runtime, now_ms: int, **settings) -> AnomalyEngine:
    return AnomalyEngine(
        AnomalySettings(**settings), runtime.db, runtime.alerts, lambda: now_ms / 1000
    )


async def test_batches_committed_during_the_rebuild_are_held_then_fed_and_can_alert(runtime):
    """20 guesses logged before the restart, 10 arrive while it rebuilds: one alert, raised
    from the held batches (not quietly), and nothing fed twice."""
    await logged(runtime, [guess(T0 + i * 1000, i) for i in range(20)])
    restart = T0 + MINUTE
    engine = engine_at(runtime, restart)
    engine.hold()  # as app.py: before the server answers
    held = [guess(restart + 1 + i, 100 + i) for i in range(10)]
    engine.observe(held[:5])
    engine.observe(held[5:])
    assert engine.observed == 0 and engine.rebuilding
    assert await engine.rebuild() == 20
    assert engine.observed == 30 and not engine.rebuilding
    await engine.work()
    (alert,) = by_detector(await alerts(runtime.db), "key_guessing")
    assert "30 checks with unknown or forged license keys" in alert["summary"]
    assert engine.last_rebuild_rows == 20 and engine.last_rebuild_seconds >= 0


async def test_a_held_attempt_stamped_before_the_replay_end_is_not_counted_twice(runtime):
    await logged(runtime, [guess(T0 + i, i) for i in range(3)])
    engine = engine_at(runtime, T0 + MINUTE)
    engine.hold()
    engine.observe([guess(T0 + 1, 1)])  # a clock set back: the replay has it already
    assert await engine.rebuild() == 3
    assert engine.observed == 3


async def test_the_rebuild_gives_the_loop_back_between_slices(runtime, monkeypatch):
    """Another task runs after every slice of the replay: a verify request is never queued
    behind a whole page (remove the yields and a page of 40 rows is fed in one go)."""
    monkeypatch.setattr(engine_module, "REPLAY_SLICE", 10)
    monkeypatch.setattr(engine_module, "REPLAY_PAGE", 40)
    await logged(runtime, [guess(T0 + i, i, network=f"198.51.{i % 90}") for i in range(200)])
    engine = engine_at(runtime, T0 + MINUTE)
    turns = 0
    done = False
    fed_at_turn: list[int] = []  # the other task's turn count at each row fed
    feed = engine.feed

    def counting_feed(a):
        fed_at_turn.append(turns)
        feed(a)

    monkeypatch.setattr(engine, "feed", counting_feed)

    async def other_task() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    try:
        assert await engine.rebuild() == 200
    finally:
        done = True
        await task
    longest_run = max(fed_at_turn.count(turn) for turn in set(fed_at_turn))
    assert len(fed_at_turn) == 200 and longest_run <= 10


async def test_the_rebuild_learns_what_live_feeding_learns(runtime, monkeypatch):
    """Across keyset pages (fetched ahead) and slices: the same windows as a live feed."""
    monkeypatch.setattr(engine_module, "REPLAY_PAGE", 7)
    monkeypatch.setattr(engine_module, "REPLAY_SLICE", 3)
    attempts = [
        attempt(T0 + i * 10, license_id=1 + i % 4, domain=f"site{i % 9}.com") for i in range(50)
    ] + [guess(T0 + 600 + i, i) for i in range(12)]
    await logged(runtime, attempts)
    rebuilt = engine_at(runtime, T0 + MINUTE)
    assert await rebuilt.rebuild() == len(attempts)
    live = AnomalyEngine(AnomalySettings())
    live.ctx.quiet = True
    live.observe(sorted(attempts, key=lambda a: a.at_ms))
    assert rebuilt.observed == live.observed
    for mine, theirs in zip(rebuilt.detectors, live.detectors, strict=True):
        for name, value in vars(mine).items():
            if hasattr(value, "_entries"):
                assert value._entries == getattr(theirs, name)._entries, (mine.name, name)


async def test_holding_is_bounded_and_counts_what_it_drops(runtime, monkeypatch):
    monkeypatch.setattr(engine_module, "HOLD_MAX", 5)
    engine = engine_at(runtime, T0)
    engine.hold()
    engine.observe([guess(T0 + 1, i) for i in range(4)])
    engine.observe([guess(T0 + 2, i) for i in range(4)])  # would make 8
    assert engine.held_dropped == 4
    await engine.rebuild()
    assert engine.observed == 4


async def test_a_stop_during_the_rebuild_ends_it_and_work_does_not_hang(runtime, monkeypatch):
    monkeypatch.setattr(engine_module, "REPLAY_PAGE", 5)
    await logged(runtime, [guess(T0 + i, i) for i in range(20)])
    engine = engine_at(runtime, T0 + MINUTE)
    stop = asyncio.Event()
    stop.set()
    assert await engine.rebuild(stop) <= 5
    assert not engine.rebuilding
    await engine.work()

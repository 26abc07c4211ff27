"""Alerts (licensing/alerts.py, migration 15): raised once per unresolved (detector, subject)."""

from __future__ import annotations

import asyncio
import json

from license_server.db import alerts as alert_rows
from license_server.licensing.alerts import AlertSignal, AlertState, Severity, raise_alert

SHARING = AlertSignal(
    detector="key_sharing",
    subject="license:7",
    severity=Severity.MEDIUM,
    summary="License 7 was checked from 4 sites; it has 2 seats.",
    evidence={"sites": 4, "seats": 2},
    license_id=7,
)


async def test_a_second_firing_bumps_the_open_alert(runtime):
    async with runtime.db.write() as conn:
        first = await raise_alert(conn, SHARING, 1_000)
        again = await raise_alert(
            conn, AlertSignal("key_sharing", "license:7", Severity.HIGH, "Now 6 sites.",
                              {"sites": 6}, 7), 2_000
        )  # fmt: skip
        other = await raise_alert(
            conn, AlertSignal("key_sharing", "license:8", Severity.LOW, "x"), 3
        )
        row = await alert_rows.get(conn, first.alert_id)
    assert first.new and not again.new and other.new
    assert again.alert_id == first.alert_id != other.alert_id
    assert row["occurrences"] == 2 and row["state"] == AlertState.OPEN
    assert (row["first_seen_ms"], row["last_seen_ms"]) == (1_000, 2_000)
    assert row["severity"] == "high" and json.loads(row["evidence"]) == {"sites": 6}
    assert row["summary"] == "Now 6 sites."


async def test_an_acknowledged_alert_is_bumped_a_resolved_one_is_not(runtime):
    async with runtime.db.write() as conn:
        first = await raise_alert(conn, SHARING, 1_000)
        assert await alert_rows.set_state(
            conn, first.alert_id, state="acknowledged", by="staff:1", now_ms=1_500,
            only_from=("open",),
        )  # fmt: skip
        bumped = await raise_alert(conn, SHARING, 2_000)
        assert await alert_rows.set_state(
            conn, first.alert_id, state="resolved", by="staff:1", now_ms=2_500,
            only_from=("open", "acknowledged"),
        )  # fmt: skip
        # Resolving twice changes nothing the second time.
        assert not await alert_rows.set_state(
            conn, first.alert_id, state="resolved", by="staff:2", now_ms=2_600,
            only_from=("open", "acknowledged"),
        )  # fmt: skip
        reopened = await raise_alert(conn, SHARING, 3_000)
        unresolved = await alert_rows.unresolved(conn, 10)
        counts = await alert_rows.count_unresolved(conn)
        old = await alert_rows.get(conn, first.alert_id)
    assert bumped.alert_id == first.alert_id and not bumped.new
    assert reopened.new and reopened.alert_id != first.alert_id
    assert [row["id"] for row in unresolved] == [reopened.alert_id]
    assert counts == {"open": 1}
    assert (old["state"], old["state_changed_by"], old["state_changed_ms"]) == (
        "resolved", "staff:1", 2_500,
    )  # fmt: skip


async def test_instances_raising_at_once_make_one_alert(runtime):
    """Concurrent raises of one (detector, subject), each in its own transaction."""

    async def raise_one(at: int) -> int:
        async def work(conn):
            return (await raise_alert(conn, SHARING, at)).alert_id

        return await runtime.db.transaction(work)

    ids = await asyncio.gather(*(raise_one(at) for at in range(1, 11)))
    async with runtime.db.read() as conn:
        row = await alert_rows.get(conn, ids[0])
    assert len(set(ids)) == 1 and row["occurrences"] == 10


async def test_long_texts_are_cut_to_the_row(runtime):
    signal = AlertSignal("key_guessing", "ip:" + "9" * 500, Severity.LOW, "s" * 5_000)
    async with runtime.db.write() as conn:
        raised = await raise_alert(conn, signal, 1)
        row = await alert_rows.get(conn, raised.alert_id)
    assert len(row["subject"]) == 200 and len(row["summary"]) == 500


async def test_the_runtime_raises_alerts_and_tells_listeners_after_the_commit(runtime):
    heard = []

    def listener(signal, raised):
        heard.append((signal.detector, raised.new))

    def broken(signal, raised):
        raise RuntimeError("a listener bug")

    runtime.alerts.subscribe(broken)
    runtime.alerts.subscribe(listener)
    first = await runtime.alerts.raise_(SHARING)
    second = await runtime.alerts.raise_(SHARING)
    async with runtime.db.read() as conn:
        row = await alert_rows.get(conn, first.alert_id)
    assert heard == [("key_sharing", True), ("key_sharing", False)]
    assert second.alert_id == first.alert_id and row["occurrences"] == 2


async def test_raise_many_writes_a_round_of_findings_in_one_transaction(runtime):
    heard = []
    runtime.alerts.subscribe(lambda signal, raised: heard.append((signal.subject, raised.new)))
    signals = [
        AlertSignal("check_flooding", f"license:{n}", Severity.MEDIUM, "Checked often.")
        for n in (1, 2, 1)
    ]
    raised = await runtime.alerts.raise_many(signals)
    assert [r.new for r in raised] == [True, True, False]
    assert raised[0].alert_id == raised[2].alert_id != raised[1].alert_id
    assert heard == [("license:1", True), ("license:2", True), ("license:1", False)]
    assert await runtime.alerts.raise_many([]) == []

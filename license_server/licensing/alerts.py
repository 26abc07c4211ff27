"""Alerts: what the server raises for staff to act on (anomaly detectors, failing webhooks).

An alert says, in words a support person understands, what was seen (`summary`), how sure and
how bad it is (`severity`), and the evidence (counts, the window, sample attempt ids). It is
de-duplicated by (detector, subject): the same detector firing again for the same license, IP
network or webhook endpoint bumps the unresolved alert (`occurrences`, `last_seen_ms`) rather
than adding another, so a sustained attack is one alert that keeps growing, not thousands.
States: open → acknowledged → resolved (or open → resolved); who changed it and when is kept
on the row and in the audit log by the staff pages that change it.

`raise_alert` takes the caller's connection, so an alert is written in the same transaction as
whatever it is about (a webhook endpoint being paused) and is never lost once that commits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from license_server.db import alerts as alert_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.licensing import webhook_events

log = logging.getLogger(__name__)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# Sizes the row keeps (a detector's evidence is bounded by what it samples).
SUBJECT_MAX = 200
SUMMARY_MAX = 500


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """One firing of a detector (or of the webhook deliveries) about one subject."""

    detector: str  # "key_sharing", "key_guessing", "webhook_failing", ...
    subject: str  # within the detector, what it is about: "license:12", "net:203.0.113.0/24"
    severity: Severity
    summary: str  # one or two sentences for a support person
    evidence: dict = field(default_factory=dict)  # JSON-able
    license_id: int | None = None


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    alert_id: int
    new: bool  # a new alert was opened (False: an unresolved one was bumped)


async def raise_alert(conn: Connection, signal: AlertSignal, now_ms: int) -> RaisedAlert:
    """Open an alert for `signal`, or bump the unresolved one of its (detector, subject)."""
    return (await raise_alerts(conn, [signal], now_ms))[0]


async def raise_alerts(
    conn: Connection, signals: Sequence[AlertSignal], now_ms: int
) -> list[RaisedAlert]:
    """`raise_alert` for each signal, in order, in a few statements for all of them: the
    upserts (a signal repeating an earlier one's detector and subject goes in a later
    statement, so it bumps the alert the earlier one opened), then the `alert.raised` webhook
    events of the alerts newly opened, which commit with them (or neither does)."""
    rows = [
        alert_rows.AlertRow(
            detector=signal.detector,
            subject=signal.subject[:SUBJECT_MAX],
            severity=str(signal.severity),
            summary=signal.summary[:SUMMARY_MAX],
            evidence=json.dumps(signal.evidence, sort_keys=True, default=str),
            license_id=signal.license_id,
        )
        for signal in signals
    ]
    raised: list[RaisedAlert | None] = [None] * len(rows)
    pending = list(range(len(rows)))
    while pending:
        distinct: dict[tuple[str, str], int] = {}
        repeats: list[int] = []
        for i in pending:
            key = (rows[i].detector, rows[i].subject)
            if key in distinct:
                repeats.append(i)
            else:
                distinct[key] = i
        found = await alert_rows.upsert_many(conn, [rows[i] for i in distinct.values()], now_ms)
        for key, i in distinct.items():
            row = found[key]
            raised[i] = RaisedAlert(int(row["id"]), int(row["occurrences"]) == 1)
        pending = repeats
    done = [one for one in raised if one is not None]
    events = [
        (webhook_events.EventType.ALERT_RAISED,
         {"alert_id": one.alert_id, "detector": row.detector, "subject": row.subject,
          "severity": row.severity, "summary": row.summary, "license_id": row.license_id,
          "occurred_at": webhook_events.iso_ms(now_ms)})
        for row, one in zip(rows, done, strict=True)
        if one.new
    ]  # fmt: skip
    if events:
        await webhook_events.enqueue_many(conn, events, now_ms)
    return done


AlertListener = Callable[[AlertSignal, RaisedAlert], None]


class Alerts:
    """Raising alerts from code that has no transaction of its own (the detectors, jobs).

    `raise_` writes the alert in its own short transaction and then tells the listeners
    (metrics, automatic actions) after the commit. Code that already holds a transaction (the
    webhook deliveries pausing an endpoint) calls `raise_alert` with its connection instead, so
    the alert commits with the change it describes."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._listeners: list[AlertListener] = []

    def subscribe(self, listener: AlertListener) -> None:
        self._listeners.append(listener)

    def announce(self, signal: AlertSignal, raised: RaisedAlert) -> None:
        for listener in self._listeners:
            try:
                listener(signal, raised)
            except Exception:
                log.exception("an alert listener failed; the alert is stored")

    async def raise_(self, signal: AlertSignal) -> RaisedAlert:
        return (await self.raise_many([signal]))[0]

    async def raise_many(self, signals: Sequence[AlertSignal]) -> list[RaisedAlert]:
        """Several alerts in one transaction of a few statements (a detector round that found
        many: one commit, not one per alert, and not a round trip per alert while it holds
        the write lock the attempt log waits for)."""
        if not signals:
            return []
        now_ms = int(self._clock() * 1000)

        raised = await self._db.transaction(lambda conn: raise_alerts(conn, signals, now_ms))
        for signal, one in zip(signals, raised, strict=True):
            self.announce(signal, one)
        return raised


# -- staff (and API keys) act on an alert ------------------------------------------------------

# The states each change may start from: acknowledging a resolved alert, or resolving twice,
# is refused (409) rather than silently rewriting who did it.
TRANSITIONS: dict[AlertState, tuple[str, ...]] = {
    AlertState.ACKNOWLEDGED: (AlertState.OPEN.value,),
    AlertState.RESOLVED: (AlertState.OPEN.value, AlertState.ACKNOWLEDGED.value),
}


class AlertNotFound(LookupError):
    """No alert with that id."""


class StateRefused(ValueError):
    """The alert is not in a state the change starts from (HTTP 409)."""


async def change_state(service, actor, alert_id: int, state: AlertState) -> dict:
    """Acknowledge or resolve one alert through the service's single write path: the state,
    who and when on the row, and an audit row (`alert.acknowledge` / `alert.resolve`, target
    `alert:<id>`, before and after) in one transaction (ASVS 4.0.3 V7.1.3: security-relevant
    decisions are logged with who made them). Returns the row as changed."""
    only_from = TRANSITIONS[state]

    async def work(writes) -> None:
        row = await alert_rows.get(writes.conn, alert_id)
        if row is None:
            raise AlertNotFound(f"no alert with id {alert_id}")
        if not await alert_rows.set_state(
            writes.conn, alert_id, state=state.value, by=str(actor), now_ms=writes.now * 1000,
            only_from=only_from,
        ):  # fmt: skip
            raise StateRefused(f"alert {alert_id} is {row['state']}: it cannot be {state.value}")
        await service.audit.append(
            writes.conn, at=writes.now, actor=actor,
            action="alert.acknowledge" if state is AlertState.ACKNOWLEDGED else "alert.resolve",
            target=f"alert:{alert_id}",
            detail={"before": {"state": row["state"]}, "after": {"state": state.value},
                    "detector": row["detector"], "subject": row["subject"]},
        )  # fmt: skip

    await service.write(actor, work)
    async with service.db.read() as conn:
        row = await alert_rows.get(conn, alert_id)
    assert row is not None  # alerts are never deleted
    return row


def actions_taken(row: dict) -> list[str]:
    """The automatic actions recorded on an alert row, oldest first."""
    return [line for line in (row.get("actions_taken") or "").split("\n") if line]


def evidence_of(row: dict) -> dict:
    """The row's evidence with the actions taken, as the page and the API show it."""
    try:
        evidence = json.loads(row["evidence"] or "{}")
    except ValueError:
        evidence = {}
    if not isinstance(evidence, dict):
        evidence = {"value": evidence}
    taken = actions_taken(row)
    if taken:
        evidence["actions_taken"] = taken
    return evidence

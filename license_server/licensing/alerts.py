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
from collections.abc import Callable
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
    row = await alert_rows.upsert(
        conn,
        detector=signal.detector,
        subject=signal.subject[:SUBJECT_MAX],
        severity=str(signal.severity),
        summary=signal.summary[:SUMMARY_MAX],
        evidence=json.dumps(signal.evidence, sort_keys=True, default=str),
        license_id=signal.license_id,
        now_ms=now_ms,
    )
    raised = RaisedAlert(int(row["id"]), int(row["occurrences"]) == 1)
    if raised.new:  # the alert.raised webhook event commits with the alert (or neither does)
        await webhook_events.enqueue(
            conn, webhook_events.EventType.ALERT_RAISED,
            {"alert_id": raised.alert_id, "detector": signal.detector,
             "subject": signal.subject[:SUBJECT_MAX], "severity": str(signal.severity),
             "summary": signal.summary[:SUMMARY_MAX], "license_id": signal.license_id,
             "occurred_at": webhook_events.iso_ms(now_ms)},
            now_ms,
        )  # fmt: skip
    return raised


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
        now_ms = int(self._clock() * 1000)

        async def work(conn: Connection) -> RaisedAlert:
            return await raise_alert(conn, signal, now_ms)

        raised = await self._db.transaction(work)
        self.announce(signal, raised)
        return raised

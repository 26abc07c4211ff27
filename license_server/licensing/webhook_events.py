"""Webhook events: what happened, written to the outbox in the transaction that made it happen.

The outbox (`webhook_events`, one `webhook_deliveries` row per subscribed endpoint) is written
with the same connection as the change it announces, by the service's single write path
(`LicenseService.write` calls `emit_changes`) and by `raise_alert`: the event exists if and
only if its change committed, so a process that dies between the change and the delivery loses
nothing (the deliveries are sent after the restart, webhooks/delivery.py). Fan-out happens at
enqueue, from the small endpoints table; with no endpoint subscribed to a type, nothing is
written for it.

`verification.refused` is not written on the verification path (that would put a write on
every refused check): the delivery loop reads the attempt log behind a cursor row
(`scan_refusals`), only while some endpoint subscribes. A storm is bounded: at most
`per_minute` events per license (unknown keys count as one subject) per minute of attempt
time; the refusals held back are counted and reported in the next event sent for that
license (`data.suppressed`).

Payloads carry ids, the product code, status, domains and times; never a license key, never
a licensee's name or e-mail (ASVS 4.0.3 V8.3.4: no more personal data than the purpose needs).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from license_server.db import webhooks as webhook_rows
from license_server.db.connection import Connection
from license_server.licensing.changes import Change, ChangeKind


class EventType(StrEnum):
    LICENSE_CREATED = "license.created"
    LICENSE_SUSPENDED = "license.suspended"
    LICENSE_UNSUSPENDED = "license.unsuspended"
    LICENSE_REVOKED = "license.revoked"
    LICENSE_REISSUED = "license.reissued"
    LICENSE_EXPIRED = "license.expired"
    DOMAIN_BOUND = "domain.bound"
    DOMAIN_RELEASED = "domain.released"
    VERIFICATION_REFUSED = "verification.refused"
    ALERT_RAISED = "alert.raised"


EVENT_TYPES: tuple[str, ...] = tuple(event.value for event in EventType)

CHANGE_EVENTS: dict[str, EventType] = {
    ChangeKind.ISSUE: EventType.LICENSE_CREATED,
    ChangeKind.SUSPEND: EventType.LICENSE_SUSPENDED,
    ChangeKind.UNSUSPEND: EventType.LICENSE_UNSUSPENDED,
    ChangeKind.REVOKE: EventType.LICENSE_REVOKED,
    ChangeKind.REISSUE: EventType.LICENSE_REISSUED,
    ChangeKind.EXPIRE: EventType.LICENSE_EXPIRED,
    ChangeKind.BIND: EventType.DOMAIN_BOUND,
    ChangeKind.RELEASE: EventType.DOMAIN_RELEASED,
}


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def iso_seconds(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat()[:-6] + "Z"


def event_body(event_type: str, data: dict, now_ms: int) -> str:
    """The JSON body as Standard Webhooks shapes it: type, timestamp, data."""
    return json.dumps(
        {"type": event_type, "timestamp": iso_ms(now_ms), "data": data},
        separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip


async def subscribers(conn: Connection) -> dict[str, list[int]]:
    """Event type -> ids of the enabled endpoints subscribed to it."""
    found: dict[str, list[int]] = {}
    for row in await webhook_rows.subscriptions(conn):
        for event_type in json.loads(row["events"]):
            found.setdefault(event_type, []).append(int(row["id"]))
    return found


# Events per statement (4 parameters each): see db/alerts.py's UPSERT_ROWS.
EVENTS_PER_STATEMENT = 500


async def enqueue_many(
    conn: Connection,
    events: Sequence[tuple[str, dict]],
    now_ms: int,
    subscribed: dict[str, Sequence[int]] | None = None,
) -> list[int]:
    """Write (type, data) events and their deliveries in the caller's transaction, in two
    statements per `EVENTS_PER_STATEMENT` events however many there are (a round of a
    thousand alerts must not make two thousand round trips while it holds the write lock).
    Events no endpoint subscribes to are not written. The ids of those written, in order."""
    if subscribed is None:
        subscribed = await subscribers(conn)
    wanted = [
        (t, data, f"msg_{secrets.token_urlsafe(18)}") for t, data in events if subscribed.get(t)
    ]
    ids: list[int] = []
    for start in range(0, len(wanted), EVENTS_PER_STATEMENT):
        chunk = wanted[start : start + EVENTS_PER_STATEMENT]
        by_uid = await webhook_rows.insert_events(
            conn, [(uid, t, event_body(t, data, now_ms)) for t, data, uid in chunk], now_ms
        )
        await webhook_rows.insert_deliveries(
            conn,
            [(by_uid[uid], endpoint) for t, _, uid in chunk for endpoint in subscribed[t]],
            now_ms,
        )
        ids.extend(by_uid[uid] for _, _, uid in chunk)
    return ids


async def emit_changes(
    conn: Connection, changes: Iterable[tuple[Change, dict | None]], now: int
) -> int:
    """The events of one write transaction's changes (`facts`: what the change record does
    not say, such as the domains bound); how many events were written. A few statements
    however many changes (an import's batch of 500 licenses, an expiry sweep): the licenses'
    facts in one read, the events and deliveries in one write each."""
    wanted = [(change, facts) for change, facts in changes if change.kind in CHANGE_EVENTS]
    if not wanted:
        return 0
    subscribed = await subscribers(conn)
    if not subscribed:
        return 0
    announced = []
    for change, facts in wanted:
        expired = change.kind == ChangeKind.UNSUSPEND and subscribed.get(EventType.LICENSE_EXPIRED)
        if change.license_id is None:
            continue
        if subscribed.get(CHANGE_EVENTS[change.kind]) or expired:
            announced.append((change, facts, expired))
    licenses = await webhook_rows.license_facts(conn, [c.license_id for c, _, _ in announced])
    items: list[tuple[str, dict]] = []
    for change, facts, expired in announced:
        license = licenses.get(change.license_id)  # type: ignore[arg-type]
        if license is None:
            continue
        event_type = CHANGE_EVENTS[change.kind]
        data = {
            "license_id": change.license_id,
            "product": license["product"],
            "status": license["status"],
            "expires_at": iso_seconds(license["expires_at"]),
            "domains": license["domains"],
            "actor": str(change.actor) if change.actor else "",
            "occurred_at": iso_seconds(now),
        }
        facts = facts or {}
        if event_type is EventType.DOMAIN_BOUND:
            items += [(event_type, {**data, "domain": d}) for d in facts.get("domains", ())]
        elif event_type is EventType.DOMAIN_RELEASED:
            if facts.get("kind") == "domain":
                items.append((event_type, {**data, "domain": facts.get("value", "")}))
        else:
            items.append((event_type, data))
        if expired and license["status"] == "expired":
            # Lifting a suspension of a license whose date has passed expires it.
            items.append((EventType.LICENSE_EXPIRED, data))
    return len(await enqueue_many(conn, items, now * 1000, subscribed))


def refusal_data(row: dict, suppressed: int) -> dict:
    return {
        "attempt_id": row["id"],
        "license_id": row["license_id"],
        "product": row["product"],
        "result": row["result"],
        "reason": row["reason"],
        "domain": row["domain"],
        "endpoint": row["endpoint"],
        "occurred_at": iso_ms(row["at_ms"]),
        "suppressed": suppressed,
    }


async def scan_refusals(conn: Connection, *, per_minute: int, batch: int, now_ms: int) -> int:
    """Turn refused checks logged since the cursor into verification.refused events (at most
    `batch` read per call); how many events were written. With no endpoint subscribed, the
    cursor only follows the log, so subscribing later sends no refusals from before."""
    cursor = await webhook_rows.lock_cursor(conn)
    if cursor is None:
        await webhook_rows.create_cursor(conn)
        cursor = await webhook_rows.lock_cursor(conn)
        assert cursor is not None  # just created (or by another instance: same row)
    newest = await webhook_rows.newest_attempt_id(conn)
    position = int(cursor["attempt_id"])
    if newest <= position:
        return 0
    targets = (await subscribers(conn)).get(EventType.VERIFICATION_REFUSED, [])
    if not targets:
        await webhook_rows.move_cursor(conn, newest, "{}")
        return 0
    rows = await webhook_rows.refusals_after(conn, position, newest, batch)
    state = json.loads(cursor["state"] or "{}")
    sent_in_minute: dict[str, int] = state.get("sent", {})
    held: dict[str, int] = state.get("held", {})
    minute = state.get("minute")
    events: list[tuple[str, dict]] = []
    for row in rows:
        row_minute = row["at_ms"] // 60_000
        if row_minute != minute:
            minute, sent_in_minute = row_minute, {}
        subject = "none" if row["license_id"] is None else str(row["license_id"])
        if sent_in_minute.get(subject, 0) >= per_minute:
            held[subject] = held.get(subject, 0) + 1
            continue
        sent_in_minute[subject] = sent_in_minute.get(subject, 0) + 1
        events.append((EventType.VERIFICATION_REFUSED, refusal_data(row, held.pop(subject, 0))))
    # All of the round's events in a few statements (up to `batch` of them), not two each.
    written = await enqueue_many(conn, events, now_ms, {EventType.VERIFICATION_REFUSED: targets})
    position = newest if len(rows) < batch else int(rows[-1]["id"])
    state = {"minute": minute, "sent": sent_in_minute, "held": held}
    await webhook_rows.move_cursor(conn, position, json.dumps(state, sort_keys=True))
    return len(written)

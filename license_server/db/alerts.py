"""Queries on the alerts table (migration 15): raise (upsert), read, change state.

An alert is identified by (detector, subject) while it is not resolved; the partial unique
index `alerts_unresolved` makes "raise" one statement that either opens an alert or bumps the
open one, also when several instances raise the same alert at once.
"""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def upsert(
    conn: Connection,
    *,
    detector: str,
    subject: str,
    severity: str,
    summary: str,
    evidence: str,
    license_id: int | None,
    now_ms: int,
) -> Row:
    """Open an alert, or bump the unresolved one of (detector, subject): its severity, summary
    and evidence become the newest, `occurrences` grows by one. Returns id and occurrences
    (1 = newly opened)."""
    row = await conn.fetch_one(
        "INSERT INTO alerts (detector, subject, severity, summary, evidence, license_id,"
        " first_seen_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (detector, subject) WHERE state <> 'resolved' DO UPDATE SET"
        " severity = excluded.severity, summary = excluded.summary,"
        " evidence = excluded.evidence, last_seen_ms = excluded.last_seen_ms,"
        " occurrences = alerts.occurrences + 1"
        " RETURNING id, occurrences",
        (detector, subject, severity, summary, evidence, license_id, now_ms, now_ms),
    )
    assert row is not None  # an upsert with RETURNING always returns its row
    return row


async def get(conn: Connection, alert_id: int) -> Row | None:
    return await conn.fetch_one("SELECT * FROM alerts WHERE id = ?", (alert_id,))


async def unresolved(conn: Connection, limit: int) -> list[Row]:
    """Open and acknowledged alerts, most recently seen first (the dashboard's widget)."""
    return await conn.fetch_all(
        "SELECT * FROM alerts WHERE state <> 'resolved' ORDER BY last_seen_ms DESC, id DESC"
        " LIMIT ?",
        (limit,),
    )


async def count_unresolved(conn: Connection) -> dict[str, int]:
    """Unresolved alerts per state."""
    rows = await conn.fetch_all(
        "SELECT state, COUNT(*) AS n FROM alerts WHERE state <> 'resolved' GROUP BY state"
    )
    return {row["state"]: int(row["n"]) for row in rows}


async def set_state(
    conn: Connection, alert_id: int, *, state: str, by: str, now_ms: int, only_from: tuple[str, ...]
) -> bool:
    """Move one alert to `state` if it is in one of `only_from`; False when it was not."""
    marks = ", ".join("?" for _ in only_from)
    changed = await conn.execute(
        # ruff S608 / bandit B608: only placeholders are joined in.
        f"UPDATE alerts SET state = ?, state_changed_ms = ?, state_changed_by = ?"  # noqa: S608 # nosec B608
        f" WHERE id = ? AND state IN ({marks})",
        (state, now_ms, by, alert_id, *only_from),
    )
    return changed > 0

"""Queries on the alerts table (migration 15): raise (upsert), read, change state.

An alert is identified by (detector, subject) while it is not resolved; the partial unique
index `alerts_unresolved` makes "raise" one statement that either opens alerts or bumps the
open ones, also when several instances raise the same alert at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from license_server.db.connection import Connection, Row
from license_server.db.where import Where


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert to open or bump (the columns `upsert_many` writes)."""

    detector: str
    subject: str
    severity: str
    summary: str
    evidence: str
    license_id: int | None


# Rows per statement: 8 parameters each, far below SQLite's (32,766) and PostgreSQL's (65,535)
# limits, and a statement of a size either plans in well under a millisecond.
UPSERT_ROWS = 500


async def upsert_many(
    conn: Connection, rows: Sequence[AlertRow], now_ms: int
) -> dict[tuple[str, str], Row]:
    """Open each alert, or bump the unresolved one of its (detector, subject): severity,
    summary and evidence become the newest, `occurrences` grows by one. One statement per
    `UPSERT_ROWS` rows, not one per alert: a detector round that finds a thousand floods
    holds the write lock for a few statements, not for a thousand round trips through the
    database thread, each waiting for a busy event loop (issue #16: the alert storm).

    (detector, subject) -> its id and occurrences (1 = newly opened). The keys of `rows` must
    be distinct: one statement cannot open an alert and bump it too (PostgreSQL refuses that;
    `licensing.alerts.raise_alerts` splits repeats into later statements)."""
    found: dict[tuple[str, str], Row] = {}
    for start in range(0, len(rows), UPSERT_ROWS):
        chunk = rows[start : start + UPSERT_ROWS]
        values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
        params = [
            value
            for row in chunk
            for value in (row.detector, row.subject, row.severity, row.summary, row.evidence,
                          row.license_id, now_ms, now_ms)
        ]  # fmt: skip
        returned = await conn.fetch_all(
            # ruff S608 / bandit B608: only placeholders are joined in.
            "INSERT INTO alerts (detector, subject, severity, summary, evidence, license_id,"  # noqa: S608 # nosec B608
            f" first_seen_ms, last_seen_ms) VALUES {values}"
            " ON CONFLICT (detector, subject) WHERE state <> 'resolved' DO UPDATE SET"
            " severity = excluded.severity, summary = excluded.summary,"
            " evidence = excluded.evidence, last_seen_ms = excluded.last_seen_ms,"
            " occurrences = alerts.occurrences + 1"
            " RETURNING id, occurrences, detector, subject",
            params,
        )
        # RETURNING's order is not the VALUES' order (SQLite documents it as arbitrary).
        for row in returned:
            found[(row["detector"], row["subject"])] = row
    return found


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


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """The alert list's filters (admin page and API); None filters nothing."""

    states: tuple[str, ...] | None = None  # ("open", "acknowledged") = unresolved
    detector: str | None = None
    severity: str | None = None
    license_id: int | None = None
    since_ms: int | None = None  # seen at or after (last_seen_ms >= since_ms)
    until_ms: int | None = None  # seen before (first_seen_ms < until_ms)


async def alert_page(
    conn: Connection, where: AlertFilter, before_id: int | None, limit: int
) -> list[Row]:
    """Newest alert first (by id), `limit` rows with id < `before_id` matching every filter.
    The day range keeps the alerts active in it: first seen before its end, last seen after
    its start."""
    where_ = Where().keyset(before_id)
    if where.states is not None:
        marks = ", ".join("?" for _ in where.states)
        where_.add(f"state IN ({marks})", *where.states)
    where_.equal("detector", where.detector).equal("severity", where.severity)
    where_.equal("license_id", where.license_id)
    if where.since_ms is not None:
        where_.add("last_seen_ms >= ?", where.since_ms)
    if where.until_ms is not None:
        where_.add("first_seen_ms < ?", where.until_ms)
    # ruff S608 / bandit B608: only db/where.py's fixed fragments and placeholders are joined.
    sql = f"SELECT * FROM alerts{where_.sql()} ORDER BY id DESC LIMIT ?"  # noqa: S608 # nosec B608
    return await conn.fetch_all(sql, (*where_.params, limit))


async def detectors(conn: Connection) -> list[str]:
    """The detectors that have raised any alert (the filter's choices)."""
    rows = await conn.fetch_all("SELECT DISTINCT detector FROM alerts ORDER BY detector")
    return [row["detector"] for row in rows]


async def unresolved_for_license(conn: Connection, license_id: int) -> list[Row]:
    """A license's open and acknowledged alerts, newest first (its page's marker)."""
    return await conn.fetch_all(
        "SELECT * FROM alerts WHERE license_id = ? AND state <> 'resolved' ORDER BY id DESC",
        (license_id,),
    )


async def note_action(conn: Connection, alert_id: int, line: str) -> bool:
    """Append one line to the alert's `actions_taken` (migration 19) in one statement."""
    changed = await conn.execute(
        "UPDATE alerts SET actions_taken = actions_taken || ? WHERE id = ?",
        (line.replace("\n", " ") + "\n", alert_id),
    )
    return changed > 0

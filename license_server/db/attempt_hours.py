"""Hourly attempt counts for the dashboard (migration 11) and the reads behind the chart.

Hours are Unix seconds of the hour's start (UTC), as in `attempt_rollups`. A folded hour is
replaced whole (delete, count again, insert) inside one transaction, so folding an hour twice,
or from two instances at once, leaves the same counts.
"""

from __future__ import annotations

from license_server.db.connection import Connection, Row

HOUR = 3600
MARKER = ""  # result and reason of the row that says "this hour is folded"


async def folded_range(conn: Connection) -> tuple[int | None, int | None]:
    """(first, last) folded hour, or (None, None)."""
    row = await conn.fetch_one(
        "SELECT MIN(hour) AS first, MAX(hour) AS last FROM attempt_hours WHERE result = ?",
        (MARKER,),
    )
    return (row["first"], row["last"]) if row else (None, None)


async def oldest_attempt_ms(conn: Connection) -> int | None:
    return await conn.fetch_value("SELECT MIN(at_ms) FROM verification_attempts")


async def fold_hour(conn: Connection, hour: int) -> None:
    """Count one closed hour of the log (the attempts_at index range) into attempt_hours."""
    await conn.execute("DELETE FROM attempt_hours WHERE hour = ?", (hour,))
    await conn.execute(
        "INSERT INTO attempt_hours (hour, result, reason, attempts)"
        " SELECT ?, result, reason, COUNT(*) FROM verification_attempts"
        " WHERE at_ms >= ? AND at_ms < ? GROUP BY result, reason",
        (hour, hour * 1000, (hour + HOUR) * 1000),
    )
    await conn.execute(
        "INSERT INTO attempt_hours (hour, result, reason, attempts) VALUES (?, ?, ?, 0)",
        (hour, MARKER, MARKER),
    )


async def folded_counts(conn: Connection, start: int, end: int) -> list[Row]:
    """(hour, result, reason, attempts) of folded hours in [start, end)."""
    return await conn.fetch_all(
        "SELECT hour, result, reason, attempts FROM attempt_hours"
        " WHERE hour >= ? AND hour < ? AND result != ?",
        (start, end, MARKER),
    )


async def rolled_up_counts(conn: Connection, start: int, end: int) -> list[Row]:
    """The same from the pruner's roll-ups, for hours before the first folded one."""
    return await conn.fetch_all(
        "SELECT hour, result, reason, SUM(attempts) AS attempts FROM attempt_rollups"
        " WHERE hour >= ? AND hour < ? GROUP BY hour, result, reason",
        (start, end),
    )


async def live_counts(conn: Connection, start_ms: int, end_ms: int) -> list[Row]:
    """The same counted from the log itself (the hours not folded yet: normally the current
    one and perhaps the one that just closed), through the attempts_at index."""
    return await conn.fetch_all(
        "SELECT (at_ms / 3600000) * 3600 AS hour, result, reason, COUNT(*) AS attempts"
        " FROM verification_attempts WHERE at_ms >= ? AND at_ms < ?"
        " GROUP BY 1, result, reason",
        (start_ms, end_ms),
    )

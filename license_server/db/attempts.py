"""Queries on the verification attempt log and its hourly roll-up."""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

ATTEMPT_COLUMNS = (
    "at_ms",
    "endpoint",
    "source_ip",
    "reported_ip",
    "domain_raw",
    "domain",
    "directory",
    "license_id",
    "key_hash",
    "product",
    "result",
    "reason",
    "client_version",
    "user_agent",
    "latency_us",
)
_INSERT = (
    f"INSERT INTO verification_attempts ({', '.join(ATTEMPT_COLUMNS)}) "  # noqa: S608 # nosec B608
    f"VALUES ({', '.join('?' for _ in ATTEMPT_COLUMNS)})"
)


async def insert_attempts(conn: aiosqlite.Connection, rows: Sequence[Sequence[object]]) -> None:
    await conn.executemany(_INSERT, rows)


async def touch_last_access(conn: aiosqlite.Connection, seen: Sequence[tuple[int, int]]) -> None:
    """(license id, unix seconds) pairs: keep licenses.last_access_at current per batch."""
    await conn.executemany(
        "UPDATE licenses SET last_access_at = ? WHERE id = ? "
        "AND (last_access_at IS NULL OR last_access_at < ?)",
        [(at, license_id, at) for license_id, at in seen],
    )


async def roll_up_before(conn: aiosqlite.Connection, cutoff_ms: int) -> None:
    """Fold attempts older than the cutoff into hourly counts (added to existing counts)."""
    await conn.execute(
        "INSERT INTO attempt_rollups (hour, endpoint, license_id, result, reason, attempts) "
        "SELECT (at_ms / 3600000) * 3600, endpoint, COALESCE(license_id, 0), result, reason, "
        "COUNT(*) FROM verification_attempts WHERE at_ms < ? "
        "GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (hour, endpoint, license_id, result, reason) "
        "DO UPDATE SET attempts = attempt_rollups.attempts + excluded.attempts",
        (cutoff_ms,),
    )


async def oldest_at_ms(conn: aiosqlite.Connection) -> int | None:
    async with conn.execute("SELECT MIN(at_ms) FROM verification_attempts") as cur:
        (oldest,) = await cur.fetchone()
    return oldest


async def delete_before(conn: aiosqlite.Connection, cutoff_ms: int) -> int:
    async with conn.execute(
        "DELETE FROM verification_attempts WHERE at_ms < ?", (cutoff_ms,)
    ) as cur:
        return cur.rowcount

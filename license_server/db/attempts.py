"""Queries on the verification attempt log and its hourly roll-up.

The inserts themselves run in each backend's attempt writer (group commit: one transaction per
batch, `SqliteAttemptWriter` / `PostgresAttemptWriter`), with the SQL defined here once.
"""

from __future__ import annotations

from collections.abc import Sequence

from license_server.db.connection import Connection, Row

# The order of `Attempt.row()` (licensing/attempt_log.py); tests/test_attempt_log.py holds the
# two together.
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
INSERT = (
    f"INSERT INTO verification_attempts ({', '.join(ATTEMPT_COLUMNS)}) "  # noqa: S608 # nosec B608
    f"VALUES ({', '.join('?' for _ in ATTEMPT_COLUMNS)})"
)

TOUCH = (
    "UPDATE licenses SET last_access_at = ? WHERE id = ? "
    "AND (last_access_at IS NULL OR last_access_at < ?)"
)


def touch_rows(seen: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(license id, unix seconds) pairs as TOUCH parameters, in license id order: two
    instances' batches then lock the rows they share in the same order (no deadlock)."""
    return [(at, license_id, at) for license_id, at in sorted(seen)]


async def roll_up_before(conn: Connection, cutoff_ms: int) -> None:
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


async def oldest_at_ms(conn: Connection) -> int | None:
    return await conn.fetch_value("SELECT MIN(at_ms) FROM verification_attempts")


async def delete_before(conn: Connection, cutoff_ms: int) -> int:
    return await conn.execute("DELETE FROM verification_attempts WHERE at_ms < ?", (cutoff_ms,))


async def recent_for_license(conn: Connection, license_id: int, limit: int) -> list[Row]:
    """The newest attempts of one license (the (license_id, at_ms) index)."""
    return await conn.fetch_all(
        "SELECT at_ms, endpoint, source_ip, domain, result, reason, client_version"
        " FROM verification_attempts WHERE license_id = ? ORDER BY at_ms DESC LIMIT ?",
        (license_id, limit),
    )

"""Queries of the anomaly detectors: the start-up rebuild, seats, binds, sample attempts.

Every read is one index range with a bound: the rebuild reads the newest attempts through
`attempts_at` (never the whole log), the change log is bounded by its own pruning (KEEP rows),
samples are LIMITed reads of the license and source-address indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

from license_server.db.connection import Connection, Row

# What the detectors read of an attempt (Attempt fields, in this order).
REPLAY_COLUMNS = (
    "id, at_ms, endpoint, source_ip, reported_ip, domain, license_id, key_hash, product,"
    " result, reason, client_version"
)


async def replay_start(conn: Connection, since_ms: int, max_rows: int) -> int:
    """Where the rebuild starts: `since_ms`, or later when more than `max_rows` attempts were
    logged since (then the at_ms of the `max_rows`-th newest): one walk of the at_ms index."""
    if max_rows <= 0:
        return 2**62
    at = await conn.fetch_value(
        "SELECT at_ms FROM verification_attempts WHERE at_ms >= ?"
        " ORDER BY at_ms DESC LIMIT 1 OFFSET ?",
        (since_ms, max_rows - 1),
    )
    return since_ms if at is None else max(since_ms, int(at))


async def replay_page(
    conn: Connection, after: tuple[int, int], until_ms: int, limit: int
) -> list[Row]:
    """Attempts after (at_ms, id) and before `until_ms`, oldest first (keyset pagination)."""
    return await conn.fetch_all(
        f"SELECT {REPLAY_COLUMNS} FROM verification_attempts"  # noqa: S608 # nosec B608
        " WHERE at_ms >= ? AND at_ms < ? AND (at_ms > ? OR id > ?)"
        " ORDER BY at_ms, id LIMIT ?",
        (after[0], until_ms, after[0], after[1], limit),
    )


async def seats(conn: Connection, license_ids: Sequence[int]) -> dict[int, int]:
    if not license_ids:
        return {}
    marks = ", ".join("?" for _ in license_ids)
    rows = await conn.fetch_all(
        # A license without seats of its own has its product's.
        "SELECT l.id, COALESCE(l.seats, p.seats) AS seats FROM licenses l"  # noqa: S608 # nosec B608
        f" JOIN products p ON p.id = l.product_id WHERE l.id IN ({marks})",
        tuple(license_ids),
    )
    return {int(row["id"]): int(row["seats"]) for row in rows}


async def binds_after(
    conn: Connection, seq: int, since: int, kinds: Sequence[str], limit: int
) -> list[Row]:
    """Change-log rows of `kinds` after `seq` and not older than `since` (Unix seconds)."""
    marks = ", ".join("?" for _ in kinds)
    return await conn.fetch_all(
        "SELECT seq, license_id, kind, at FROM license_changes"  # noqa: S608 # nosec B608
        f" WHERE seq > ? AND at >= ? AND kind IN ({marks}) AND license_id IS NOT NULL"
        " ORDER BY seq LIMIT ?",
        (seq, since, *kinds, limit),
    )


async def latest_change_seq(conn: Connection) -> int:
    return int(await conn.fetch_value("SELECT max(seq) FROM license_changes") or 0)


async def sample_for_license(
    conn: Connection, license_id: int, since_ms: int, limit: int
) -> list[int]:
    rows = await conn.fetch_all(
        "SELECT id FROM verification_attempts WHERE license_id = ? AND at_ms >= ?"
        " ORDER BY at_ms DESC LIMIT ?",
        (license_id, since_ms, limit),
    )
    return [int(row["id"]) for row in rows]


async def sample_for_addresses(
    conn: Connection, low: str, high: str, since_ms: int, limit: int
) -> list[int]:
    """Attempt ids from source addresses in the text range [low, high) (a dotted-quad
    prefix: the attempts_source_ip index)."""
    rows = await conn.fetch_all(
        "SELECT id FROM verification_attempts WHERE source_ip >= ? AND source_ip < ?"
        " AND at_ms >= ? ORDER BY source_ip, at_ms DESC LIMIT ?",
        (low, high, since_ms, limit),
    )
    return [int(row["id"]) for row in rows]

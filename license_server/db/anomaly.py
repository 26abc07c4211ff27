"""Queries of the anomaly detectors: the start-up rebuild, seats, binds, sample attempts.

Every read is one index range with a bound: the rebuild reads the newest attempts through
`attempts_at` (never the whole log), the change log is bounded by its own pruning (KEEP rows),
samples are LIMITed reads of the license and source-address indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class SampleOf:
    """The newest attempts behind one finding since `since_ms`: of a license (`license_id`), or
    from the source addresses in the text range [low, high) (a dotted-quad prefix)."""

    since_ms: int
    license_id: int | None = None
    low: str = ""
    high: str = ""


_BY_LICENSE = (
    "SELECT id FROM verification_attempts WHERE license_id = ? AND at_ms >= ?"
    " ORDER BY at_ms DESC LIMIT ?"
)
# The attempts_source_ip index.
_BY_ADDRESSES = (
    "SELECT id FROM verification_attempts WHERE source_ip >= ? AND source_ip < ?"
    " AND at_ms >= ? ORDER BY source_ip, at_ms DESC LIMIT ?"
)
# Below SQLite's limit of 500 terms in one compound SELECT (SQLITE_MAX_COMPOUND_SELECT).
SAMPLES_PER_STATEMENT = 200


async def samples(
    conn: Connection, wanted: Sequence[SampleOf | None], limit: int
) -> list[list[int]]:
    """Up to `limit` attempt ids for each of `wanted`, in order (none for None): one statement per
    `SAMPLES_PER_STATEMENT` of them (a UNION ALL of LIMITed index reads), not one each, so a
    round of a thousand findings is a few round trips through the database thread."""
    found: list[list[int]] = [[] for _ in wanted]
    reads = [(n, one) for n, one in enumerate(wanted) if one is not None]
    for start in range(0, len(reads), SAMPLES_PER_STATEMENT):
        parts: list[str] = []
        params: list[object] = []
        for n, one in reads[start : start + SAMPLES_PER_STATEMENT]:
            if one.license_id is not None:
                sql, args = _BY_LICENSE, (one.license_id, one.since_ms, limit)
            else:
                sql, args = _BY_ADDRESSES, (one.low, one.high, one.since_ms, limit)
            # ruff S608 / bandit B608: `n` is an int of ours, `sql` one of the reads above.
            parts.append(f"SELECT {n} AS n, id FROM ({sql}) AS s{n}")  # noqa: S608 # nosec B608
            params.extend(args)
        for row in await conn.fetch_all(" UNION ALL ".join(parts), params):
            found[int(row["n"])].append(int(row["id"]))
    return found

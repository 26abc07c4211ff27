"""Queries on the change log (`license_changes`): append, prune, and read what is newer.

The log is a signal for caches, not an audit trail: it keeps the newest `KEEP` rows only, so
its size (and the cost of reading it) stays bounded however long the server runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiosqlite

# Newest rows kept. A reader that fell further behind than this flushes all its caches
# instead of reading the gap (licensing/changes.py reads at most FETCH_LIMIT rows).
KEEP = 10_000


async def record(
    conn: aiosqlite.Connection, changes: Iterable[tuple[int | None, str]], now: int
) -> None:
    """Append (license_id or None, kind) rows inside the caller's transaction, then prune."""
    rows = [(license_id, kind, now) for license_id, kind in changes]
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO license_changes (license_id, kind, at) VALUES (?, ?, ?)", rows
    )
    # seq is the rowid: new rows take max + 1 and the newest row is never deleted, so seq only
    # grows. One indexed range delete per write transaction.
    async with conn.execute("SELECT max(seq) FROM license_changes") as cur:
        (newest,) = await cur.fetchone()
    await conn.execute("DELETE FROM license_changes WHERE seq <= ?", (newest - KEEP,))
    # Published to the change signal once the transaction has committed (Database.write).
    conn.pending_change_seq = newest


async def latest_seq(conn: aiosqlite.Connection) -> int:
    """The newest seq, 0 for an empty log (the rightmost entry of the primary key)."""
    async with conn.execute("SELECT max(seq) FROM license_changes") as cur:
        (seq,) = await cur.fetchone()
    return int(seq or 0)


async def changes_after(conn: aiosqlite.Connection, seq: int, limit: int) -> list[dict]:
    """Rows newer than `seq`, oldest first, at most `limit`."""
    async with conn.execute(
        "SELECT seq, license_id, kind FROM license_changes WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit),
    ) as cur:
        return [dict(row) for row in await cur.fetchall()]

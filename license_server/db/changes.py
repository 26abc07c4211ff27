"""Queries on the change log (`license_changes`): append, prune, and read what is newer.

The log is a signal for caches, not an audit trail: it keeps the newest `KEEP` rows only, so
its size (and the cost of reading it) stays bounded however long the server runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from license_server.db.connection import Connection, Row

# Newest rows kept. A reader that fell further behind than this flushes all its caches
# instead of reading the gap (licensing/changes.py reads at most FETCH_LIMIT rows).
KEEP = 10_000


async def record(conn: Connection, changes: Iterable[tuple[int | None, str]], now: int) -> None:
    """Append (license_id or None, kind) rows inside the caller's transaction, then prune."""
    rows = [(license_id, kind, now) for license_id, kind in changes]
    if not rows:
        return
    # Readers take "newest seq seen" as "everything up to it seen": seqs must become visible
    # in order. SQLite has one writer; PostgreSQL serialises this tail of write transactions.
    await conn.before_change_log()
    await conn.execute_many(
        "INSERT INTO license_changes (license_id, kind, at) VALUES (?, ?, ?)", rows
    )
    # New rows take max + 1 and the newest row is never deleted, so seq only grows. One
    # indexed range delete per write transaction.
    newest = int(await conn.fetch_value("SELECT max(seq) FROM license_changes"))
    await conn.execute("DELETE FROM license_changes WHERE seq <= ?", (newest - KEEP,))
    # Published to the change signal once the transaction has committed (Database.write).
    conn.pending_change_seq = newest


async def latest_seq(conn: Connection) -> int:
    """The newest seq, 0 for an empty log (the rightmost entry of the primary key)."""
    return int(await conn.fetch_value("SELECT max(seq) FROM license_changes") or 0)


async def changes_after(conn: Connection, seq: int, limit: int) -> list[Row]:
    """Rows newer than `seq`, oldest first, at most `limit`."""
    return await conn.fetch_all(
        "SELECT seq, license_id, kind FROM license_changes WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit),
    )

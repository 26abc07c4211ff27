"""Queries on the verification attempt log and its hourly roll-up."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosqlite

from license_server.db import dialect

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


_TOUCH = (
    "UPDATE licenses SET last_access_at = ? WHERE id = ? "
    "AND (last_access_at IS NULL OR last_access_at < ?)"
)


async def touch_last_access(conn: aiosqlite.Connection, seen: Sequence[tuple[int, int]]) -> None:
    """(license id, unix seconds) pairs: keep licenses.last_access_at current per batch."""
    await conn.executemany(_TOUCH, [(at, license_id, at) for license_id, at in seen])


class AttemptWriter:
    """The attempt log's own writer: a dedicated thread with its own SQLite connection.

    One thread hop per batch: BEGIN IMMEDIATE, the inserts, the last-access updates and the
    COMMIT run in one call on the writer thread, instead of four hops through aiosqlite's
    queue (issue #16 measured 14-17 us per request in those hops). WAL, synchronous=FULL:
    when `write` returns, the batch is durable, and only then are its answers sent. Other
    writes (bindings, the pruner) take the database's write lock on their own connection;
    SQLite serialises the two writers, and the busy timeout makes either wait for the other.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="attempt-writer")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(
            self._executor, dialect.connect_writer_sync, self._path
        )

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def write(
        self, rows: Sequence[Sequence[object]], seen: Sequence[tuple[int, int]]
    ) -> None:
        if self._conn is None:
            raise RuntimeError("attempt writer is not open")
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._write, self._conn, rows, seen
        )

    @staticmethod
    def _write(
        conn: sqlite3.Connection, rows: Sequence[Sequence[object]], seen: Sequence[tuple[int, int]]
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            if seen:
                conn.executemany(_TOUCH, [(at, license_id, at) for license_id, at in seen])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


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

"""Everything SQLite-specific: connection set-up, schema version, DDL types, online backup.

Queries elsewhere in `db/` use only SQL that SQLite and PostgreSQL share (`?` placeholders are
translated by the driver layer of a future backend; `INSERT ... RETURNING`, `ON CONFLICT` and
`CURRENT_TIMESTAMP`-free integer timestamps work on both).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import aiosqlite

# DDL placeholders a migration may use; a PostgreSQL dialect maps them to BIGSERIAL, BYTEA...
DDL_TYPES = {
    "pk": "INTEGER PRIMARY KEY",
    "blob": "BLOB",
    "bigint": "INTEGER",
    "bool": "INTEGER",
}

# Why these pragmas: WAL lets readers run beside the one writer; synchronous=FULL makes a
# committed transaction survive power loss, not just a killed process (group commit keeps the
# fsync cost per batch, not per row); foreign keys are off by default in SQLite.
_WRITER_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
_READER_PRAGMAS = ("PRAGMA query_only=ON", "PRAGMA busy_timeout=5000")


def create_private_file(path: Path) -> None:
    """Create the database file owner-only (it holds PII and key hashes); SQLite gives its
    -wal and -shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def connect_writer_sync(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 writer connection (for a dedicated writer thread), set up as the
    aiosqlite writer is."""
    create_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in _WRITER_PRAGMAS:
        conn.execute(pragma)
    return conn


async def open_writer(path: Path) -> aiosqlite.Connection:
    create_private_file(path)
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    for pragma in _WRITER_PRAGMAS:
        await conn.execute(pragma)
    return conn


def _read_only_uri(path: Path) -> str:
    return f"file:{path.resolve()}?mode=ro"


async def open_reader(path: Path) -> aiosqlite.Connection:
    # Start-up only: resolving the path once is no hot-path blocking.
    conn = await aiosqlite.connect(_read_only_uri(path), uri=True, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    for pragma in _READER_PRAGMAS:
        await conn.execute(pragma)
    return conn


async def begin_write(conn: aiosqlite.Connection) -> None:
    # IMMEDIATE takes the write lock up front, so a transaction never fails half-way on upgrade.
    await conn.execute("BEGIN IMMEDIATE")


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        (version,) = await cur.fetchone()
    return int(version)


async def set_schema_version(conn: aiosqlite.Connection, version: int) -> None:
    await conn.execute(f"PRAGMA user_version = {int(version)}")


async def backup_to(conn: aiosqlite.Connection, target: Path) -> None:
    """SQLite online backup: a consistent copy while the server keeps serving."""
    create_private_file(target)
    async with aiosqlite.connect(target) as dest:
        await conn.backup(dest)


def is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

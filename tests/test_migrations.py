"""Migrations: from an empty database, re-applied, refused when the schema is newer, atomic.

On the store under test (SQLite, or PostgreSQL with `--store postgresql`); the SQLite
backend's own details (WAL, file mode, a failing ROLLBACK) are tested on SQLite in every run.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from license_server.db import migrations
from license_server.db.database import open_database
from license_server.db.errors import DatabaseError, ReadOnlyViolation
from license_server.db.migrations import LATEST, Migration, migrate
from license_server.db.sqlite import SqliteDatabase
from tests.store_helpers import tables_at


async def schema_version(location) -> int:
    db = open_database(location)
    await db.open()
    try:
        async with db.write() as conn:
            return await conn.schema_version()
    finally:
        await db.close()


async def test_migrates_an_empty_database(database_url):
    db = open_database(database_url)
    await db.open()
    await db.close()
    expected = {"products", "licenses", "license_rules", "license_bindings", "license_changes"}
    assert expected <= tables_at(database_url)
    assert await schema_version(database_url) == LATEST


async def test_reapplying_changes_nothing(database_url):
    db = open_database(database_url)
    await db.open()
    async with db.write() as conn:
        assert await migrate(conn) == []
    await db.close()
    assert await schema_version(database_url) == LATEST  # a restart applies nothing


async def test_a_newer_schema_is_refused(database_url):
    db = open_database(database_url)
    await db.open()
    async with db.write() as conn:
        await conn.set_schema_version(LATEST + 1)
    await db.close()
    with pytest.raises(RuntimeError, match="newer than this server"):
        await open_database(database_url).open()


async def test_a_failing_migration_leaves_the_previous_schema(database_url, monkeypatch):
    broken = Migration(LATEST + 1, "broken", ("CREATE TABLE half (id {bigint})", "NOT SQL"))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST", LATEST + 1)
    with pytest.raises(DatabaseError):
        await open_database(database_url).open()
    tables = tables_at(database_url)
    assert "half" not in tables
    assert "products" not in tables  # migration 1 rolled back with it


async def test_instances_starting_together_migrate_once(database_url):
    """Several processes (or instances) open one new database at once: one migrates, the
    others wait for it and find nothing to do; none fails half-way."""
    dbs = [open_database(database_url) for _ in range(3)]
    await asyncio.gather(*(db.open() for db in dbs))
    for db in dbs:
        async with db.write() as conn:
            assert await migrate(conn) == []
        await db.close()
    assert await schema_version(database_url) == LATEST


async def test_readers_cannot_write(database_url):
    db = open_database(database_url)
    await db.open()
    try:
        async with db.read() as conn:
            with pytest.raises(ReadOnlyViolation):
                await conn.execute("DELETE FROM products")
    finally:
        await db.close()


# -- the SQLite backend's own guarantees (every run) ----------------------------------------


async def test_sqlite_runs_in_wal_mode(tmp_path):
    db = SqliteDatabase(tmp_path / "x.db")
    await db.open()
    await db.close()
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


async def test_database_file_is_private(tmp_path):
    db = SqliteDatabase(tmp_path / "x.db")
    await db.open()
    await db.close()
    assert (db.path.stat().st_mode & 0o777) == 0o600


async def test_a_failing_rollback_never_replaces_the_cancellation(tmp_path, monkeypatch):
    """A cancelled COMMIT may complete in the connection's thread, and the ROLLBACK after it
    then fails ('no transaction is active'). That error once replaced the CancelledError and
    left a background task sleeping through shutdown."""
    import aiosqlite

    db = SqliteDatabase(tmp_path / "x.db")
    await db.open()
    real_execute = aiosqlite.Connection.execute

    def execute(self, sql, *args, **kwargs):
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        return real_execute(self, sql, *args, **kwargs)

    try:
        monkeypatch.setattr(aiosqlite.Connection, "execute", execute)
        with pytest.raises(asyncio.CancelledError):
            async with db.write():
                raise asyncio.CancelledError
    finally:
        monkeypatch.undo()
        await db.close()

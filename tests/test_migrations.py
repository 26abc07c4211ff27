"""Migrations: from an empty database, re-applied, refused when the schema is newer, atomic."""

from __future__ import annotations

import sqlite3

import pytest

from license_server.db import migrations
from license_server.db.database import Database
from license_server.db.migrations import LATEST, Migration, migrate


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def user_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_migrates_an_empty_database(tmp_path):
    db = Database(tmp_path / "x.db")
    await db.open()
    await db.close()
    assert {"products", "licenses", "license_rules", "license_bindings"} <= tables(db.path)
    assert user_version(db.path) == LATEST
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_reapplying_changes_nothing(tmp_path):
    db = Database(tmp_path / "x.db")
    await db.open()
    async with db.write() as conn:
        assert await migrate(conn) == []
    await db.close()
    db2 = Database(tmp_path / "x.db")
    await db2.open()  # a restart applies nothing and keeps the version
    await db2.close()
    assert user_version(db.path) == LATEST


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(RuntimeError, match="newer than this server"):
        await Database(path).open()


async def test_a_failing_migration_leaves_the_previous_schema(tmp_path, monkeypatch):
    broken = Migration(LATEST + 1, "broken", ("CREATE TABLE half (id INTEGER)", "NOT SQL"))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST", LATEST + 1)
    with pytest.raises(sqlite3.OperationalError):
        await Database(tmp_path / "x.db").open()
    assert "half" not in tables(tmp_path / "x.db")
    assert "products" not in tables(tmp_path / "x.db")  # migration 1 rolled back with it
    assert user_version(tmp_path / "x.db") == 0


async def test_readers_cannot_write(tmp_path):
    db = Database(tmp_path / "x.db")
    await db.open()
    try:
        async with db.read() as conn:
            with pytest.raises(sqlite3.OperationalError):
                await conn.execute("DELETE FROM products")
    finally:
        await db.close()


async def test_database_file_is_private(tmp_path):
    db = Database(tmp_path / "x.db")
    await db.open()
    await db.close()
    assert (db.path.stat().st_mode & 0o777) == 0o600


async def test_a_failing_rollback_never_replaces_the_cancellation(tmp_path, monkeypatch):
    """A cancelled COMMIT may complete in the connection's thread, and the ROLLBACK after it
    then fails ('no transaction is active'). That error once replaced the CancelledError and
    left a background task sleeping through shutdown."""
    import asyncio

    import aiosqlite

    db = Database(tmp_path / "x.db")
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

"""Reading the store from tests, the same way on SQLite and PostgreSQL.

Tests look at what the server wrote (attempt rows, the change log) through these, never
through a driver, so that every test runs on both backends (`pytest --store postgresql`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import asyncpg

from license_server.db.database import Database
from license_server.db.postgres import to_numbered


async def rows(db: Database, table: str, order: str = "") -> list[dict]:
    sql = f"SELECT * FROM {table}" + (f" ORDER BY {order}" if order else "")
    async with db.read() as conn:
        return await conn.fetch_all(sql)


async def table_names(db: Database) -> list[str]:
    async with db.read() as conn:
        if db.backend == "sqlite":
            found = await conn.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
            return [row["name"] for row in found]
        found = await conn.fetch_all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return [row["table_name"] for row in found]


def tables_at(location: Path | str) -> set[str]:
    """The tables of a database no server has open (synchronous)."""
    if str(location).startswith(("postgresql://", "postgres://")):
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {name for (name,) in query(location, sql)}


async def execute(db: Database, sql: str, params: tuple = ()) -> int:
    """One statement in its own write transaction (a test editing rows by hand)."""
    async with db.write() as conn:
        return await conn.execute(sql, params)


def query_dicts(location: Path | str, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """As `query`, each row a dict of column name to value."""
    return query(location, sql, params, as_dicts=True)


def query(location: Path | str, sql: str, params: tuple = (), as_dicts: bool = False) -> list[Any]:
    """Rows as tuples, read from outside the server (a test beside a server process); `?`
    placeholders on both backends. Synchronous, for tests that drive a subprocess."""
    text = str(location)
    if not text.startswith(("postgresql://", "postgres://")):
        conn = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
        if as_dicts:
            conn.row_factory = sqlite3.Row
        with contextlib.closing(conn):
            found = conn.execute(sql, params).fetchall()
        return [dict(row) for row in found] if as_dicts else found

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(text)
        try:
            found = await conn.fetch(to_numbered(sql), *params)
            return [dict(row) if as_dicts else tuple(row) for row in found]
        finally:
            await conn.close()

    # Its own thread and loop: callers may be inside a running event loop.
    result: list = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(fetch()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class CountedStatements:
    """Counts the statements run through `db`'s connections, reads and writes alike (what a
    change costs in round trips, on either backend: tests of batched writes)."""

    METHODS = ("fetch_all", "fetch_one", "fetch_value", "execute", "execute_many")

    def __init__(self, db, monkeypatch) -> None:
        self.count = 0
        self.sql: list[str] = []  # the start of each, for a failing test's message
        for method in ("read", "write"):
            monkeypatch.setattr(db, method, self._counting(getattr(db, method)))

    def by_statement(self) -> list[tuple[str, int]]:
        return collections.Counter(self.sql).most_common()

    def _counting(self, opened):
        counter = self

        class Counted:
            def __init__(self, conn) -> None:
                self._conn = conn

            def __getattr__(self, name):
                attr = getattr(self._conn, name)
                if name not in CountedStatements.METHODS:
                    return attr

                async def counted(*args, **kwargs):
                    counter.count += 1
                    counter.sql.append(str(args[0] if args else kwargs.get("sql", name))[:60])
                    return await attr(*args, **kwargs)

                return counted

        @contextlib.asynccontextmanager
        async def counting(*args, **kwargs):
            async with opened(*args, **kwargs) as conn:
                yield Counted(conn)

        return counting

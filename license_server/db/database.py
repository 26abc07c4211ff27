"""The database handle every other layer uses, whichever backend serves it.

`open_database(settings.database)` gives a `SqliteDatabase` for a file path (the embedded
default) or a `PostgresDatabase` for a `postgresql://` URL. Both offer the same things:
`read()` (a connection for queries), `write()` (one transaction, committed whole or not at
all), `transaction(work)` (the same, run again from the start on a serialisation failure),
`attempts` (the attempt log's group-commit writer), `change_signal` (a cheap "did anything
change" for caches, or None where there is none), `ping()` and `backup()`.
"""

from __future__ import annotations

import asyncio
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from license_server.db.connection import Connection
from license_server.db.errors import SerializationFailure
from license_server.db.migrations import migrate

T = TypeVar("T")

# A unit of work that keeps meeting concurrent writers is given up after this many tries.
TRANSACTION_TRIES = 8


class AttemptStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def write(
        self, rows: Sequence[Sequence[object]], seen: Sequence[tuple[int, int]]
    ) -> None:
        """Insert attempt rows and advance `last_access_at` in one durable transaction."""


class Signal(Protocol):
    def value(self) -> int: ...


class Database(ABC):
    backend: str
    attempts: AttemptStore
    change_signal: Signal | None

    def __init__(self) -> None:
        self.retries = 0  # units of work run again after a serialisation failure

    @abstractmethod
    def describe(self) -> str:
        """What to print at start-up: never a password."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[Connection]:
        """One write transaction: everything in the block commits together or not at all."""

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[Connection]: ...

    @abstractmethod
    async def backup(self, target: Any) -> None: ...

    async def transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` in one write transaction; on a serialisation failure (another instance
        changed what it read) run all of it again, reads included, so every decision it makes
        is made on data that was current when it committed. `work` must not have effects
        outside the transaction."""
        for attempt in range(1, TRANSACTION_TRIES + 1):
            try:
                async with self.write() as conn:
                    return await work(conn)
            except SerializationFailure:
                if attempt == TRANSACTION_TRIES:
                    raise
                self.retries += 1
                # Jittered back-off, so that two instances that collided do not collide again.
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 # nosec B311
        raise AssertionError("unreachable")

    async def migrate(self) -> list[int]:
        async with self.write() as conn:
            return await migrate(conn)

    async def ping(self) -> bool:
        async with self.read() as conn:
            return await conn.fetch_value("SELECT 1") == 1


def open_database(location: Path | str, readers: int = 2) -> Database:
    """The backend for a settings value: a PostgreSQL URL or a SQLite file path."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from license_server.db.postgres import PostgresDatabase

        return PostgresDatabase(text, readers=readers)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        # Never a path: that would create directories named after the URL, password included.
        raise ValueError("not a store: a SQLite file path or a postgresql:// URL (not shown)")
    from license_server.db.sqlite import SqliteDatabase

    return SqliteDatabase(Path(location), readers=readers)

"""The SQLite backend (the embedded default): connections, pragmas, the writers, online backup.

One writer connection behind an asyncio lock and a small pool of read-only readers. SQLite
allows one writer at a time; serialising writes in-process (`BEGIN IMMEDIATE ... COMMIT`) means
no request waits on SQLITE_BUSY, and a failed block is rolled back whole, so no half-written
record is left behind. Readers are opened read-only, so a bug in a read path cannot write.
The attempt log has its own writer thread and connection (`SqliteAttemptWriter`); SQLite
serialises it with the main writer, and the busy timeout makes either wait for the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

try:
    import fcntl
except ImportError:  # Windows: one process per database there (no SO_REUSEPORT workers)
    fcntl = None  # type: ignore[assignment]

from license_server.db import attempts as attempt_sql
from license_server.db.change_signal import ChangeSignal
from license_server.db.connection import Connection, Params, Row
from license_server.db.database import Database
from license_server.db.errors import (
    DatabaseError,
    ReadOnlyViolation,
    SerializationFailure,
    UniqueViolation,
)

# Why these pragmas: WAL lets readers run beside the one writer; synchronous=FULL makes a
# committed transaction survive power loss, not just a killed process (group commit keeps the
# fsync cost per batch, not per row); foreign keys are off by default in SQLite.
_WRITER_PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # first: the pragmas below may have to wait for a lock
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
# Switching a new database to WAL needs it to itself: processes opening one new file at once
# can get SQLITE_BUSY at once, without the busy handler (SQLite's deadlock avoidance). Start-up
# only: the switch is retried for up to this many seconds.
_SETUP_RETRY_SECONDS = 10.0
_SETUP_RETRY_PAUSE = 0.05
_READER_PRAGMAS = ("PRAGMA query_only=ON", "PRAGMA busy_timeout=5000")


def translate(exc: sqlite3.Error) -> DatabaseError:
    """The driver's exception as a `db.errors` one (raised `from` the original)."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in text:
        return UniqueViolation(text)
    if "readonly" in text or "read-only" in text:
        return ReadOnlyViolation(text)
    if "database is locked" in text or "database is busy" in text:
        return SerializationFailure(text)
    return DatabaseError(text)


class SqliteConnection(Connection):
    dialect = "sqlite"
    ddl_types: ClassVar[dict[str, str]] = {
        "pk": "INTEGER PRIMARY KEY",
        "blob": "BLOB",
        "bigint": "INTEGER",
        "bool": "INTEGER",
        "false": "0",
    }
    for_update = ""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__()
        self.raw = conn

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            async with self.raw.execute(sql, params) as cur:
                return [dict(row) for row in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        try:
            async with self.raw.execute(sql, params) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return None if row is None else dict(row)

    async def fetch_value(self, sql: str, params: Params = ()) -> Any:
        try:
            async with self.raw.execute(sql, params) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return None if row is None else row[0]

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            async with self.raw.execute(sql, params) as cur:
                return cur.rowcount
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        try:
            await self.raw.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def schema_version(self) -> int:
        # No lock to take: the caller's BEGIN IMMEDIATE holds the database's write lock.
        return int(await self.fetch_value("PRAGMA user_version"))

    async def set_schema_version(self, version: int) -> None:
        await self.execute(f"PRAGMA user_version = {int(version)}")

    async def before_change_log(self) -> None:
        """Nothing to do: one writer at a time, so seqs commit in order."""

    async def lock_name(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE holds the database's only write lock."""


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
    await _apply(conn, _WRITER_PRAGMAS)
    return conn


async def _apply(conn: aiosqlite.Connection, pragmas: Sequence[str]) -> None:
    """Set a new connection up; on failure (a file that is not a database) close it, or its
    thread would keep the process alive after the error."""
    try:
        for pragma in pragmas:
            waited = 0.0
            while True:
                try:
                    await conn.execute(pragma)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or waited >= _SETUP_RETRY_SECONDS:
                        raise
                    await asyncio.sleep(_SETUP_RETRY_PAUSE)  # bounded start-up wait
                    waited += _SETUP_RETRY_PAUSE
    except BaseException:
        await conn.close()
        raise


def _read_only_uri(path: Path) -> str:
    return f"file:{path.resolve()}?mode=ro"


async def open_reader(path: Path) -> aiosqlite.Connection:
    # Start-up only: resolving the path once is no hot-path blocking.
    conn = await aiosqlite.connect(_read_only_uri(path), uri=True, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await _apply(conn, _READER_PRAGMAS)
    return conn


class WriterTurn:
    """Whose turn it is to commit attempts, among the processes that log to one SQLite file
    (`workers = N`): an exclusive `flock` on `<database>-writers`, held from BEGIN IMMEDIATE to
    the end of COMMIT by the attempt writer thread.

    Why: SQLite lets one of them in and makes the other wait in its busy handler, which sleeps
    1, 2, 5, 10, 15, 20, 25 ms... between tries and cannot be woken. Meanwhile the writer that
    got in commits again and again (it never sleeps), so the sleeper could lose for 100+ ms:
    with two workers on the hot key, strace showed each writer asleep in that handler for
    ~8% of the time, and p99 went from ~10 ms (one worker) to 60-600 ms. A writer blocked in
    `flock` is woken by the kernel the moment the lock is released, and the two take turns
    batch by batch. The database's own locking is unchanged (other writers, such as the
    service's, still meet the busy handler; they are rare); this only orders the attempt
    writers. A process that dies holding it releases it with its file. On a system without
    `flock` the turn is a no-op, as before."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        if fcntl is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # holds nothing

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def writer_turn_path(database: Path) -> Path:
    return database.with_name(database.name + "-writers")


class SqliteAttemptWriter:
    """The attempt log's own writer: a dedicated thread with its own SQLite connection.

    One thread hop per batch: BEGIN IMMEDIATE, the inserts, the last-access updates and the
    COMMIT run in one call on the writer thread, instead of four hops through aiosqlite's
    queue (issue #16 measured 14-17 us per request in those hops). WAL, synchronous=FULL:
    when `write` returns, the batch is durable, and only then are its answers sent. Several
    processes on one file take turns (`WriterTurn`).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="attempt-writer")
        self._conn: sqlite3.Connection | None = None
        self._turn: WriterTurn | None = None

    async def open(self) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(
            self._executor, connect_writer_sync, self._path
        )
        self._turn = WriterTurn(writer_turn_path(self._path))

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        if self._turn is not None:
            self._turn.close()
            self._turn = None
        self._executor.shutdown(wait=True)

    async def write(
        self, rows: Sequence[Sequence[object]], seen: Sequence[tuple[int, int]]
    ) -> None:
        if self._conn is None or self._turn is None:
            raise RuntimeError("attempt writer is not open")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write, self._conn, self._turn, rows, seen
            )
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    @staticmethod
    def _write(
        conn: sqlite3.Connection,
        turn: WriterTurn,
        rows: Sequence[Sequence[object]],
        seen: Sequence[tuple[int, int]],
    ) -> None:
        with turn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(attempt_sql.INSERT, rows)
                if seen:
                    conn.executemany(attempt_sql.TOUCH, attempt_sql.touch_rows(seen))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise


class SqliteDatabase(Database):
    backend = "sqlite"

    def __init__(self, path: Path, readers: int = 2) -> None:
        super().__init__()
        self.path = Path(path)
        self._reader_count = readers
        self._writer: SqliteConnection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[SqliteConnection] = asyncio.Queue()
        self._all_readers: list[SqliteConnection] = []
        self.attempts = SqliteAttemptWriter(self.path)
        self.change_signal: ChangeSignal | None = None

    def describe(self) -> str:
        return f"SQLite {self.path}"

    async def open(self) -> None:
        self._writer = SqliteConnection(await open_writer(self.path))
        self.change_signal = ChangeSignal(self.path.with_name(self.path.name + "-changes"))
        try:
            await self.migrate()
            for _ in range(self._reader_count):
                reader = SqliteConnection(await open_reader(self.path))
                self._all_readers.append(reader)
                self._readers.put_nowait(reader)
            await self.attempts.open()
        except BaseException:
            await self.close()  # an open connection's thread would keep the process alive
            raise

    async def close(self) -> None:
        await self.attempts.close()
        if self.change_signal is not None:
            self.change_signal.close()
            self.change_signal = None
        for reader in self._all_readers:
            await reader.raw.close()
        self._all_readers.clear()
        if self._writer is not None:
            await self._writer.raw.close()
            self._writer = None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteConnection]:
        assert self._writer is not None, "database is not open"
        async with self._write_lock:
            conn = self._writer
            conn.pending_change_seq = None
            try:
                # IMMEDIATE takes the write lock up front: never a failure half-way on upgrade.
                # Inside the try: a cancellation while it runs may leave it done in the
                # connection's thread, and the ROLLBACK below must then end it.
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
                if conn.pending_change_seq is not None and self.change_signal is not None:
                    self.change_signal.publish(conn.pending_change_seq)
            except BaseException:
                # Also after a failed COMMIT (disk full: still open) or a cancelled one (it may
                # have completed in the connection's thread: nothing left to roll back). The
                # ROLLBACK must never replace the original exception, above all a cancellation.
                with contextlib.suppress(sqlite3.Error, DatabaseError):
                    await conn.raw.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqliteConnection]:
        if not self._all_readers:
            raise RuntimeError("database is not open")  # instead of waiting forever
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put_nowait(reader)

    async def backup(self, target: Path) -> None:
        """SQLite online backup: a consistent copy while the server keeps serving."""
        async with self._write_lock:
            assert self._writer is not None
            create_private_file(target)
            async with aiosqlite.connect(target) as dest:
                await self._writer.raw.backup(dest)

"""The database handle: one writer connection behind a lock, a small pool of read-only readers.

SQLite allows one writer at a time; serialising writes in-process (an asyncio lock around
`BEGIN IMMEDIATE ... COMMIT`) means no request ever waits on SQLITE_BUSY, and a failed block is
rolled back whole, so no half-written record is left behind. Readers are opened read-only, so a
bug in a read path cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from license_server.db import dialect
from license_server.db.attempts import AttemptWriter
from license_server.db.change_signal import ChangeSignal
from license_server.db.migrations import migrate


class Database:
    def __init__(self, path: Path, readers: int = 2) -> None:
        self.path = path
        self._reader_count = readers
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self.attempts = AttemptWriter(path)
        self.change_signal: ChangeSignal | None = None

    async def open(self) -> None:
        self._writer = await dialect.open_writer(self.path)
        self.change_signal = ChangeSignal(self.path.with_name(self.path.name + "-changes"))
        try:
            async with self.write() as conn:
                await migrate(conn)
            for _ in range(self._reader_count):
                reader = await dialect.open_reader(self.path)
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
            await reader.close()
        self._all_readers.clear()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: everything in the block commits together or not at all."""
        assert self._writer is not None, "database is not open"
        async with self._write_lock:
            conn = self._writer
            conn.pending_change_seq = None
            await dialect.begin_write(conn)
            try:
                yield conn
                await conn.execute("COMMIT")
                if conn.pending_change_seq is not None and self.change_signal is not None:
                    self.change_signal.publish(conn.pending_change_seq)
            except BaseException:
                # Also after a failed COMMIT (disk full: still open) or a cancelled one (it may
                # have completed in the connection's thread: nothing left to roll back). The
                # ROLLBACK must never replace the original exception, above all a cancellation.
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        if not self._all_readers:
            raise RuntimeError("database is not open")  # instead of waiting forever
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put_nowait(reader)

    async def ping(self) -> bool:
        async with self.read() as conn, conn.execute("SELECT 1") as cur:
            row = await cur.fetchone()
        return row is not None and row[0] == 1

    async def backup(self, target: Path) -> None:
        async with self._write_lock:
            assert self._writer is not None
            await dialect.backup_to(self._writer, target)

"""The storage seam: the connection every query in `db/` is written against.

Queries are plain SQL that SQLite and PostgreSQL share, with `?` placeholders; a backend
translates them (`$1, $2, ...` for asyncpg) and its driver's rows and errors into plain dicts
and `db.errors`. What the two engines do differently sits on the connection, not in queries:
the DDL types of migrations, where the schema version is kept, and `FOR UPDATE`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

Row = dict[str, Any]
Params = Sequence[Any]


class Connection(ABC):
    dialect: ClassVar[str]
    # Migrations write `{pk}`, `{blob}`, `{bigint}`, `{bool}`, `{false}`: each dialect's types.
    ddl_types: ClassVar[dict[str, str]]
    # Appended to a SELECT that must lock the rows it reads until the transaction ends. Empty on
    # SQLite, where a write transaction already holds the database's only write lock.
    for_update: ClassVar[str]

    def __init__(self) -> None:
        # The change-log seq this transaction wrote (db/changes.py), published after COMMIT.
        self.pending_change_seq: int | None = None

    @abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    async def fetch_value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None: ...

    # -- what migrations need -------------------------------------------------------------

    @abstractmethod
    async def schema_version(self) -> int:
        """The applied migration; also takes the lock that keeps two migrating processes
        (or instances) from racing: the second waits and then finds nothing to do."""

    @abstractmethod
    async def set_schema_version(self, version: int) -> None: ...

    @abstractmethod
    async def before_change_log(self) -> None:
        """Called before a transaction appends to the change log (db/changes.py)."""

    @abstractmethod
    async def lock_name(self, name: str) -> None:
        """Hold a lock on `name` until the transaction ends, for a check that spans rows no
        single row lock covers (a free trial's domain across licenses, an import's keys).
        SQLite: nothing to do, the write transaction holds the database's only write lock."""

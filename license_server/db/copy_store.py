"""Moving a store from one database to another, and checking that a copy is whole.

`run.py copy-store FROM TO` moves every table from SQLite to PostgreSQL (to run several
instances) or back; `run.py migrate` and `run.py backup` use the helpers at the end. Both ends
are opened through `open_database`, so both are at the latest schema before a row moves.

How a copy runs, and why:

- The target must hold no row in any copied table (`TargetNotEmpty`): a copy never merges.
- Tables are copied parents first (products before licenses before their rules ...), ids
  preserved, each in pages of `BATCH_ROWS` rows read by primary key (never a whole table in
  memory: the attempt log may hold millions of rows), all read in one snapshot of the source,
  so a copy is consistent even if something still writes to it (nothing should).
- One write transaction per batch, not per table: a table-sized transaction would grow
  SQLite's WAL to the size of the whole attempt log before its one checkpoint, and would hold
  the target's write lock for minutes. Atomicity of the whole copy is not what a per-table
  transaction would give either (tables commit apart); what keeps a failed copy from being
  taken for a good one is the refusal of a non-empty target and the verification: a copy
  that stopped half-way is dropped and run again into a fresh database.
- Values are normalised to the target's types (SQLite stores booleans as 0/1 and PostgreSQL
  as BOOLEAN; blobs may come back as memoryview) and, on PostgreSQL, each identity sequence
  is moved past the largest copied id so that new rows do not collide.
- Then every table is verified: row count and a SHA-256 over its rows in key order with
  normalised values (`row_digest_line`), computed from the rows read from the source and from
  the rows read back from the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from license_server.db.connection import Connection, Row
from license_server.db.database import Database, open_database
from license_server.db.errors import DatabaseError

BATCH_ROWS = 2_000

# Smaller than any key's first column (a 64-bit integer on both engines: id, hour, seq).
_BELOW_EVERY_KEY = -(2**63)
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]  # the primary key; its first column is an integer
    identity: str | None = None  # the column PostgreSQL numbers (GENERATED ... AS IDENTITY)


# Parents before children (foreign keys are enforced on both engines). Every table of the
# schema but the schema version (tests/test_copy_store.py checks none is missing).
TABLES: tuple[Table, ...] = (
    Table("products", ("id",), "id"),
    Table("licenses", ("id",), "id"),
    Table("license_rules", ("id",), "id"),
    Table("license_bindings", ("id",), "id"),
    Table("bans", ("id",), "id"),
    Table("verification_attempts", ("id",), "id"),
    Table("attempt_rollups", ("hour", "endpoint", "license_id", "result", "reason")),
    Table("license_changes", ("seq",), "seq"),
    Table("staff_accounts", ("id",), "id"),
    Table("staff_sessions", ("id",), "id"),
    Table("staff_recovery_codes", ("id",), "id"),
    Table("staff_setup_links", ("id",), "id"),
    Table("audit_log", ("id",), "id"),
    Table("security_events", ("id",), "id"),
    Table("attempt_hours", ("hour", "result", "reason")),
    Table("api_keys", ("id",), "id"),
    Table("api_idempotency", ("id",), "id"),
    Table("api_token_families", ("id",), "id"),
    Table("api_refresh_tokens", ("id",), "id"),
    Table("alerts", ("id",), "id"),
    Table("portal_sessions", ("id",), "id"),
    Table("portal_confirmations", ("id",), "id"),
    Table("webhook_endpoints", ("id",), "id"),
    Table("webhook_events", ("id",), "id"),
    Table("webhook_deliveries", ("id",), "id"),
    Table("webhook_delivery_attempts", ("id",), "id"),
    Table("webhook_cursor", ("id",), "id"),
)
# Tables that hold no data to copy: each end keeps its own.
NOT_COPIED = frozenset({"schema_version"})


class StoreError(Exception):
    """An operation on a store cannot go on; one line for the operator, never a password.

    `exit_code`: 2 for a store that cannot be used as given (bad location, missing database,
    non-empty target), 1 for a copy that went wrong (a refused row, a failed verification)."""

    exit_code = 2


class TargetNotEmpty(StoreError):
    pass


class CopyFailed(StoreError):
    exit_code = 1


# -- locations ------------------------------------------------------------------------------


def parse_location(text: str) -> Path | str:
    """A SQLite file path or a postgresql:// URL, as `open_database` takes it. A URL of any
    other scheme is refused, never taken for a path (that would create a SQLite file in a
    directory named after the URL, password included); the error does not repeat the value."""
    match = _URL_SCHEME.match(text)
    if match is None:
        if not text.strip():
            raise StoreError("an empty location (a SQLite file path or a postgresql:// URL)")
        return Path(text)
    scheme = match.group(1).lower()
    if scheme not in _POSTGRES_SCHEMES:
        raise StoreError(
            f"a {scheme}:// URL is not a store (a SQLite file path or a postgresql:// URL "
            "is); the value is not shown, it may hold a password"
        )
    return text


def _password_forms(location: Path | str) -> list[str]:
    if isinstance(location, Path):
        return []
    try:
        password = urlsplit(location).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)


def scrub(message: str, location: Path | str) -> str:
    """`message` without the password of `location` (drivers may repeat parts of a DSN)."""
    for form in _password_forms(location):
        message = message.replace(form, "***")
    return " ".join(message.split())  # one line


def describe(location: Path | str) -> str:
    """What to call a location in a message: the database's own describe(), no password."""
    try:
        return open_database(location).describe()
    except ValueError:  # a URL whose port is not a number
        return "PostgreSQL (a URL that cannot be parsed; not shown)"


def _same_store(a: Path | str, b: Path | str) -> bool:
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return describe(a) == describe(b)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path, must_exist: bool) -> None:
    """Refuse what is not a SQLite database before the backend opens it: its open() leaks the
    writer's thread when a pragma fails on such a file, and the process then never exits."""
    if not path.exists():
        if must_exist:
            raise StoreError(f"{path} does not exist")
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    with path.open("rb") as fh:
        header = fh.read(len(_SQLITE_HEADER))
    if header and header != _SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database")


async def open_store(location: Path | str, *, must_exist: bool = False) -> Database:
    """The opened (and so migrated) database at `location`; StoreError if it cannot be."""
    if isinstance(location, Path):
        await asyncio.to_thread(_check_sqlite_file, location, must_exist)
    name = describe(location)
    try:
        db = open_database(location, readers=1)
        await db.open()
    except Exception as exc:  # driver, OS or migration errors: one line, no traceback
        detail = scrub(str(exc) or type(exc).__name__, location)
        raise StoreError(f"cannot open {name}: {detail}") from None
    return db


# -- reading in key order -------------------------------------------------------------------


async def pages(
    conn: Connection, table: Table, batch: int = BATCH_ROWS
) -> AsyncIterator[list[Row]]:
    """The rows of `table` in primary-key order, about `batch` at a time.

    Paged on the key's first column (an integer on every table): the bound of a page is the
    value `batch` rows on, and a page takes every row up to and including it, so a composite
    key (attempt_rollups) is never split across pages. Within a page the rows are sorted here,
    by the whole key: text compares by code point in Python, whatever the database's collation,
    so both engines give the same order (and the same checksum)."""
    lead, name = table.key[0], table.name
    # Table and column names come from TABLES, never from input; values are parameters.
    # ruff S608 / bandit B608: SQL built from those constants only.
    first = f"SELECT {lead} FROM {name} WHERE {lead} > ? ORDER BY {lead} LIMIT 1 OFFSET ?"  # noqa: S608 # nosec B608
    after = f"SELECT * FROM {name} WHERE {lead} > ?"  # noqa: S608 # nosec B608
    between = f"SELECT * FROM {name} WHERE {lead} > ? AND {lead} <= ?"  # noqa: S608 # nosec B608
    last: Any = _BELOW_EVERY_KEY
    while True:
        bound = await conn.fetch_value(first, (last, batch - 1))
        if bound is None:  # the rest of the table is shorter than a page
            rows = await conn.fetch_all(after, (last,))
        else:
            rows = await conn.fetch_all(between, (last, bound))
        if rows:
            rows.sort(key=lambda row: tuple(row[column] for column in table.key))
            yield rows
        if bound is None:
            return
        last = bound


@asynccontextmanager
async def snapshot(db: Database) -> AsyncIterator[Connection]:
    """A read connection that sees one snapshot of the database until the block ends."""
    async with db.read() as conn:
        if conn.dialect == "postgresql":
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            await conn.execute("BEGIN")  # a read transaction: WAL keeps its snapshot
        try:
            yield conn
        finally:
            # Nothing was written: a failed COMMIT must not hide why the block ended.
            with contextlib.suppress(DatabaseError):
                await conn.execute("COMMIT")


# -- normalised values and checksums --------------------------------------------------------


def normalise(value: Any) -> Any:
    """One value as JSON that is the same whichever engine it came from: bool -> int,
    bytes/memoryview -> tagged hex, None -> a marker, text tagged apart from numbers."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["int", int(value)]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, str):
        return ["text", value]
    if isinstance(value, float):
        return ["real", repr(value)]
    raise TypeError(f"no normal form for a {type(value).__name__} value")


def row_digest_line(row: Row) -> bytes:
    """A row as the checksum reads it: columns by name, normalised values, one line."""
    items = [[column, normalise(row[column])] for column in sorted(row)]
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass
class Checksum:
    rows: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)

    def add(self, rows: Sequence[Row]) -> None:
        self.rows += len(rows)
        for row in rows:
            self.sha256.update(row_digest_line(row))

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


async def table_checksum(conn: Connection, table: Table, batch: int = BATCH_ROWS) -> Checksum:
    checksum = Checksum()
    async for rows in pages(conn, table, batch):
        checksum.add(rows)
    return checksum


async def checksums(db: Database, batch: int = BATCH_ROWS) -> dict[str, Checksum]:
    """Row count and checksum of every copied table, from one snapshot of `db`."""
    async with snapshot(db) as conn:
        return {table.name: await table_checksum(conn, table, batch) for table in TABLES}


# -- the copy -------------------------------------------------------------------------------


async def _column_types(conn: Connection, table: str) -> dict[str, str]:
    """Column name -> declared type, in table order, of the target."""
    if conn.dialect == "postgresql":
        rows = await conn.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return {row["column_name"]: row["data_type"].lower() for row in rows}
    rows = await conn.fetch_all(f"PRAGMA table_info({table})")
    return {row["name"]: str(row["type"]).lower() for row in rows}


def _converter(dialect: str, column_type: str) -> Callable[[Any], Any]:
    """What a source value becomes in a target column of this type."""
    if dialect == "postgresql" and column_type == "boolean":
        return lambda value: None if value is None else bool(value)
    if dialect == "postgresql" and column_type == "bytea":
        return lambda value: None if value is None else bytes(value)

    def plain(value: Any) -> Any:
        if isinstance(value, bool):  # SQLite: booleans are integers
            return int(value)
        if isinstance(value, memoryview | bytearray):
            return bytes(value)
        return value

    return plain


async def occupied_tables(db: Database) -> list[str]:
    """The copied tables of `db` that hold at least one row."""
    found = []
    async with db.read() as conn:
        for table in TABLES:
            # ruff S608 / bandit B608: a table name from TABLES, never from input.
            probe = f"SELECT 1 FROM {table.name} LIMIT 1"  # noqa: S608 # nosec B608
            if await conn.fetch_value(probe):
                found.append(table.name)
    return found


async def _reset_identities(target: Database) -> None:
    """On PostgreSQL: each identity sequence past the largest copied id (an empty table keeps
    its sequence at the start: setval(NULL) changes nothing)."""
    async with target.write() as conn:
        if conn.dialect != "postgresql":
            return  # SQLite's INTEGER PRIMARY KEY takes max(id) + 1 by itself
        for table in TABLES:
            if table.identity is None:
                continue
            name, column = table.name, table.identity
            # ruff S608 / bandit B608: names from TABLES, never from input.
            reset = (
                f"SELECT setval(pg_get_serial_sequence('{name}', '{column}'), "  # noqa: S608 # nosec B608
                f"(SELECT max({column}) FROM {name}))"
            )
            await conn.fetch_value(reset)


@dataclass(frozen=True)
class TableReport:
    name: str
    source: Checksum
    target: Checksum

    @property
    def matches(self) -> bool:
        return (self.source.rows, self.source.hexdigest) == (
            self.target.rows,
            self.target.hexdigest,
        )


async def copy_tables(
    source: Database,
    target: Database,
    *,
    batch: int = BATCH_ROWS,
    on_table: Callable[[str, int, float], None] | None = None,
) -> list[TableReport]:
    """Copy every table of `source` into the empty `target`, then verify it (see module)."""
    occupied = await occupied_tables(target)
    if occupied:
        raise TargetNotEmpty(
            f"{target.describe()} already holds rows (in {', '.join(occupied)}); "
            "copy-store copies only into an empty database"
        )
    read: dict[str, Checksum] = {}
    async with snapshot(source) as src:
        for table in TABLES:
            started = time.monotonic()
            read[table.name] = await _copy_table(src, target, table, batch)
            if on_table is not None:
                on_table(table.name, read[table.name].rows, time.monotonic() - started)
    await _reset_identities(target)
    if target.change_signal is not None and hasattr(target.change_signal, "publish"):
        # Processes on the copy look at the change log once instead of trusting caches.
        async with target.read() as conn:
            newest = await conn.fetch_value("SELECT max(seq) FROM license_changes")
        if newest:
            target.change_signal.publish(int(newest))
    written = await checksums(target, batch)
    return [TableReport(table.name, read[table.name], written[table.name]) for table in TABLES]


async def _copy_table(src: Connection, target: Database, table: Table, batch: int) -> Checksum:
    async with target.read() as conn:
        types = await _column_types(conn, table.name)
        dialect = conn.dialect
    columns = list(types)
    converters = [_converter(dialect, types[column]) for column in columns]
    # ruff S608 / bandit B608: the table from TABLES, its columns as the target lists them.
    insert = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 # nosec B608
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    checksum = Checksum()
    async for rows in pages(src, table, batch):
        if set(rows[0]) != set(columns):
            raise CopyFailed(
                f"{table.name}: the two databases' columns differ "
                f"({sorted(set(rows[0]) ^ set(columns))}); are both at the same schema?"
            )
        checksum.add(rows)
        values = [
            tuple(convert(row[column]) for column, convert in zip(columns, converters, strict=True))
            for row in rows
        ]
        try:
            async with target.write() as conn:
                await conn.execute_many(insert, values)
        except Exception as exc:
            raise CopyFailed(
                f"{table.name}: the target refused a batch after {checksum.rows - len(rows)} "
                f"rows: {' '.join(str(exc).split())}; drop the target and copy again"
            ) from None
    return checksum


def format_report(reports: Sequence[TableReport]) -> list[str]:
    """The verification as a table: rows and the start of each checksum, on both sides."""
    width = max(len(report.name) for report in reports)
    lines = [
        f"{'table'.ljust(width)}  {'rows from':>10}  {'rows to':>10}  "
        f"{'sha256 from':16}  {'sha256 to':16}  result"
    ]
    for report in reports:
        result = "ok" if report.matches else "MISMATCH"
        lines.append(
            f"{report.name.ljust(width)}  {report.source.rows:>10,}  {report.target.rows:>10,}  "
            f"{report.source.hexdigest[:16]}  {report.target.hexdigest[:16]}  {result}"
        )
    return lines


async def copy_store(
    source_text: str,
    target_text: str,
    *,
    batch: int = BATCH_ROWS,
    out: Callable[[str], None] = print,
) -> int:
    """`run.py copy-store FROM TO`: 0 when every table verified, 1 otherwise; StoreError for
    what stops it before or during the copy."""
    source_location = parse_location(source_text)
    target_location = parse_location(target_text)
    if _same_store(source_location, target_location):
        raise StoreError("FROM and TO are the same database")
    source = await open_store(source_location, must_exist=True)
    try:
        target = await open_store(target_location)
        try:
            out(f"copying {source.describe()} -> {target.describe()}")
            reports = await copy_tables(
                source,
                target,
                batch=batch,
                on_table=lambda name, rows, seconds: out(
                    f"  {name}: {rows:,} rows in {seconds:.1f} s"
                ),
            )
        finally:
            await target.close()
    finally:
        await source.close()
    for line in format_report(reports):
        out(line)
    if all(report.matches for report in reports):
        out("verified: every table has the same rows on both sides")
        return 0
    out("VERIFICATION FAILED: do not use the copy")
    return 1


# -- migrate and backup helpers -------------------------------------------------------------


async def schema_version_at(location: Path | str) -> int:
    """The schema version of the database at `location`, read without migrating it (0 for a
    SQLite file that does not exist yet or a database without the version table)."""
    if isinstance(location, Path):

        def read() -> int:
            if not location.exists():
                return 0
            conn = sqlite3.connect(f"file:{location.resolve()}?mode=ro", uri=True)
            try:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
            finally:
                conn.close()

        return await asyncio.to_thread(read)
    import asyncpg

    conn = await asyncpg.connect(location, timeout=10)
    try:
        # Where postgres.py keeps it: a one-row table, created by the first migration run.
        if not await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            return 0
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    finally:
        await conn.close()


async def current_schema_version(db: Database) -> int:
    async with db.write() as conn:  # schema_version() takes the migration lock: a write
        return await conn.schema_version()

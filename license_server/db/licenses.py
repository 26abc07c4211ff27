"""Queries on licenses, their rules (allowed domains/IPs/dirs) and bindings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields

from license_server.db.connection import Connection, Row


@dataclass(frozen=True, slots=True)
class NewLicense:
    """A `licenses` row to insert: the one definition of its shape (the service's issue, the
    WHMCS import and the benchmark's seeding all build one). `id` and the two timestamps are
    filled in by the write that inserts it when left at their defaults."""

    product_id: int
    key_hash: bytes
    key_encrypted: bytes
    key_kind: str  # signed | legacy
    status: str
    licensee_name: str
    id: int = 0
    # The licensee's e-mail, sealed by the service (LicenseService.seal_email) once the id is
    # known: AES-GCM bound to the row, and its blind index (None when there is no address).
    # The old plain `licensee_email` column is written as '' (migration 12).
    licensee_email_encrypted: bytes = b""
    licensee_email_index: bytes | None = None
    licensee_company: str = ""
    expires_at: int | None = None
    seats: int | None = None  # None: the product's
    reissue_count: int = 0
    notes: str = ""
    created_at: int = 0
    updated_at: int = 0
    whmcs_service_id: int | None = None
    billing_cycle: str = ""
    last_access_at: int | None = None
    signing_kid: str | None = None  # the kid that signed a signed key (run.py retire)


_INSERT_COLUMNS = tuple(field.name for field in fields(NewLicense))
_INSERT = (
    f"INSERT INTO licenses ({', '.join(_INSERT_COLUMNS)}, licensee_email) "  # noqa: S608 # nosec B608
    f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)}, '')"
)


async def insert_licenses(conn: Connection, rows: Sequence[NewLicense]) -> None:
    """Insert licenses in one batch (one round trip, whatever their number: a bulk issue or
    an import's batch of 500 must not hold the write lock for one per license)."""
    for row in rows:
        if not row.id:
            raise ValueError("a license is inserted with its id")
        if not row.licensee_email_encrypted:
            raise ValueError("a license is inserted with its e-mail sealed")
    await conn.execute_many(_INSERT, [astuple(row) for row in rows])


# -- licensee e-mails: sealing the rows of before migration 12 -------------------------------


async def unsealed_emails(conn: Connection, limit: int) -> list[Row]:
    """Rows whose e-mail is still in the plain column (the partial index finds them)."""
    return await conn.fetch_all(
        "SELECT id, licensee_email FROM licenses WHERE licensee_email_encrypted IS NULL "
        "ORDER BY id LIMIT ?",
        (limit,),
    )


async def seal_emails(conn: Connection, sealed: Iterable[tuple[bytes, bytes | None, int]]) -> None:
    """Store (encrypted, blind index, id) and empty the plain column of those rows."""
    await conn.execute_many(
        "UPDATE licenses SET licensee_email_encrypted = ?, licensee_email_index = ?, "
        "licensee_email = '' WHERE id = ? AND licensee_email_encrypted IS NULL",
        list(sealed),
    )


async def lock_license(conn: Connection, license_id: int) -> Row | None:
    """The license's row, held until the transaction ends, so that a read-check-write on it
    (seats, reissues) cannot interleave with another instance's: `SELECT ... FOR UPDATE` on
    PostgreSQL; on SQLite the write transaction already holds the only write lock. One query:
    the lock and the read. None when there is no such license."""
    return await conn.fetch_one(
        "SELECT * FROM licenses WHERE id = ?" + conn.for_update,  # noqa: S608 # nosec B608
        (license_id,),
    )


# Ids per IN list of `taken_ids`.
IDS_PER_STATEMENT = 500


async def taken_ids(conn: Connection, license_ids: Iterable[int]) -> set[int]:
    """Which of `license_ids` are licenses already (one statement per `IDS_PER_STATEMENT`)."""
    ids = list(license_ids)
    taken: set[int] = set()
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start : start + IDS_PER_STATEMENT]
        marks = ", ".join("?" for _ in chunk)
        # ruff S608 / bandit B608: only placeholders are joined in.
        sql = f"SELECT id FROM licenses WHERE id IN ({marks})"  # noqa: S608 # nosec B608
        taken.update(int(row["id"]) for row in await conn.fetch_all(sql, chunk))
    return taken


async def count_live_signed_by(conn: Connection, kid: str) -> int:
    """Licenses not revoked whose key this signing key signed (recorded at issue)."""
    return int(
        await conn.fetch_value(
            "SELECT COUNT(*) FROM licenses WHERE signing_kid = ? AND status != 'revoked'", (kid,)
        )
    )


async def live_signed_without_kid(conn: Connection) -> list[Row]:
    """Signed licenses not revoked that were issued before the signing key was recorded."""
    return await conn.fetch_all(
        "SELECT id, key_encrypted FROM licenses"
        " WHERE signing_kid IS NULL AND key_kind = 'signed' AND status != 'revoked'"
    )


async def longest_offline_days(conn: Connection) -> int:
    """The most days any product lets a local key be trusted offline, grace included."""
    days = await conn.fetch_value("SELECT MAX(local_key_days + grace_days) FROM products")
    return int(days or 0)


async def license_by_hash(conn: Connection, key_hash: bytes) -> Row | None:
    return await conn.fetch_one("SELECT * FROM licenses WHERE key_hash = ?", (key_hash,))


async def license_by_id(conn: Connection, license_id: int) -> Row | None:
    return await conn.fetch_one("SELECT * FROM licenses WHERE id = ?", (license_id,))


async def rules_of(conn: Connection, license_id: int) -> list[Row]:
    return await conn.fetch_all(
        "SELECT kind, value FROM license_rules WHERE license_id = ? ORDER BY id", (license_id,)
    )


async def bindings_of(conn: Connection, license_id: int) -> list[Row]:
    return await conn.fetch_all(
        "SELECT kind, value, raw_value, is_dev, created_at, last_seen_at "
        "FROM license_bindings WHERE license_id = ? ORDER BY id",
        (license_id,),
    )


async def add_rules(conn: Connection, license_id: int, rules: Iterable[tuple[str, str]]) -> None:
    await add_rules_of(conn, [(license_id, kind, value) for kind, value in rules])


async def add_rules_of(conn: Connection, rules: Iterable[tuple[int, str, str]]) -> None:
    """(license id, kind, value) rules of any number of licenses, in one batch."""
    await conn.execute_many(
        "INSERT INTO license_rules (license_id, kind, value) VALUES (?, ?, ?) "
        "ON CONFLICT (license_id, kind, value) DO NOTHING",
        list(rules),
    )


async def update_state(
    conn: Connection,
    license_id: int,
    *,
    status: str,
    expires_at: int | None,
    reissue_count: int,
    now: int,
    reissued_at: int | None = None,
) -> None:
    """`reissued_at`: set `last_reissued_at` (a reissue); None keeps it."""
    # revision lets in-process caches notice that the row changed.
    await conn.execute(
        "UPDATE licenses SET status = ?, expires_at = ?, reissue_count = ?, updated_at = ?, "
        "last_reissued_at = COALESCE(?, last_reissued_at), revision = revision + 1 WHERE id = ?",
        (status, expires_at, reissue_count, now, reissued_at, license_id),
    )


async def clear_bindings(conn: Connection, license_id: int) -> None:
    await conn.execute("DELETE FROM license_bindings WHERE license_id = ?", (license_id,))


async def upsert_binding(
    conn: Connection,
    license_id: int,
    *,
    kind: str,
    value: str,
    raw_value: str,
    is_dev: bool,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO license_bindings "
        "(license_id, kind, value, raw_value, is_dev, created_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (license_id, kind, value) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        (license_id, kind, value, raw_value, bool(is_dev), now, now),
    )


async def other_holders_of_domain(
    conn: Connection, product_id: int, domain: str, license_id: int
) -> list[int]:
    """Licenses of the same product already bound to `domain` (free-trial duplicates)."""
    rows = await conn.fetch_all(
        "SELECT DISTINCT b.license_id FROM license_bindings b "
        "JOIN licenses l ON l.id = b.license_id "
        "WHERE b.kind = 'domain' AND b.value = ? AND l.product_id = ? AND b.license_id <> ?",
        (domain, product_id, license_id),
    )
    return [row["license_id"] for row in rows]


async def count_by_status(conn: Connection) -> dict[str, int]:
    """Licenses per status (the admin's dashboard): one pass over the status column."""
    rows = await conn.fetch_all("SELECT status, COUNT(*) AS n FROM licenses GROUP BY status")
    return {row["status"]: int(row["n"]) for row in rows}


@dataclass(frozen=True, slots=True)
class LicenseFilter:
    """What the admin's list is narrowed to; every field set is one more AND. Values come
    parsed and typed from the web layer; none is ever pasted into SQL."""

    status: str | None = None
    product_id: int | None = None
    expires_from: int | None = None  # expires_at >= this (licenses without expiry left out)
    expires_to: int | None = None  # expires_at <= this (idem)
    license_id: int | None = None  # a search by key: the key's row
    email_index: bytes | None = None  # a search by e-mail: its blind index
    bound_domain: str | None = None  # a search by domain (normalised): its bindings
    name_contains: str | None = None  # a search by licensee name, any case


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter_clauses(where: LicenseFilter) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    for clause, value in (
        ("l.status = ?", where.status),
        ("l.product_id = ?", where.product_id),
        ("l.expires_at >= ?", where.expires_from),
        ("l.expires_at <= ?", where.expires_to),
        ("l.id = ?", where.license_id),
        ("l.licensee_email_index = ?", where.email_index),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    search: list[str] = []
    if where.bound_domain is not None:
        # The bindings index (kind, value): one range, however many licenses there are.
        search.append(
            "l.id IN (SELECT b.license_id FROM license_bindings b"
            " WHERE b.kind = 'domain' AND b.value = ?)"
        )
        params.append(where.bound_domain)
    if where.name_contains is not None:
        # A substring cannot use an index: this walks licenses newest first (the primary
        # key, backwards) and stops at the page's LIMIT. A name on many licenses answers at
        # once; a name on none reads every row: at 1,000,000 licenses 0.4-0.9 s on SQLite
        # (bench/admin_pages.py "name, no match": 0.44 s quiet, 0.9 s on a busy 2-core
        # machine). lower() folds ASCII on SQLite and the database's locale on PostgreSQL.
        search.append("lower(l.licensee_name) LIKE ? ESCAPE '\\'")
        params.append(_like_pattern(where.name_contains))
    if search:
        clauses.extend(search)
    return clauses, params


# The columns a list row needs; the sealed e-mail is opened by the service.
_PAGE_COLUMNS = (
    "l.id, l.status, l.licensee_name, l.licensee_company, l.licensee_email,"
    " l.licensee_email_encrypted, l.key_encrypted, l.key_kind, l.expires_at, l.seats,"
    " l.created_at, p.code AS product, p.seats AS product_seats"
)


async def license_page(
    conn: Connection,
    *,
    before_id: int | None,
    limit: int,
    where: LicenseFilter | None = None,
) -> list[Row]:
    """Licenses for the admin's list, by id descending from `before_id` (keyset pagination:
    one index range per page however many licenses there are, with each filter's index:
    (status, id), (product_id, id), the e-mail's blind index, the bindings; see
    `_filter_clauses` for what a name search costs)."""
    clauses, params = _filter_clauses(where or LicenseFilter())
    if before_id is not None:
        clauses.append("l.id < ?")
        params.append(before_id)
    clause = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    # ruff S608 / bandit B608: the clause is built from the constant fragments above only.
    return await conn.fetch_all(
        f"SELECT {_PAGE_COLUMNS} FROM licenses l"  # noqa: S608 # nosec B608
        f" JOIN products p ON p.id = l.product_id {clause}ORDER BY l.id DESC LIMIT ?",
        [*params, limit],
    )


async def licenses_bound_to(conn: Connection, kind: str, value: str, limit: int) -> list[int]:
    """Licenses holding a binding (the bindings index), for the admin's search."""
    rows = await conn.fetch_all(
        "SELECT DISTINCT license_id FROM license_bindings WHERE kind = ? AND value = ? LIMIT ?",
        (kind, value, limit),
    )
    return [row["license_id"] for row in rows]


async def update_terms(
    conn: Connection,
    license_id: int,
    *,
    licensee_name: str,
    licensee_company: str,
    seats: int | None,
    notes: str,
    now: int,
) -> None:
    """Staff's "edit rules": the licensee, seats (None: the product's) and notes."""
    await conn.execute(
        "UPDATE licenses SET licensee_name = ?, licensee_company = ?, seats = ?, notes = ?, "
        "updated_at = ?, revision = revision + 1 WHERE id = ?",
        (licensee_name, licensee_company, seats, notes, now, license_id),
    )


async def replace_rules(
    conn: Connection, license_id: int, rules: Iterable[tuple[str, str]]
) -> None:
    """The license's allow-rules become exactly `rules`."""
    await conn.execute("DELETE FROM license_rules WHERE license_id = ?", (license_id,))
    await add_rules(conn, license_id, rules)


async def delete_binding(
    conn: Connection, license_id: int, kind: str, value: str, now: int
) -> bool:
    """Free one binding (its seat); False when the license holds no such binding."""
    deleted = await conn.execute(
        "DELETE FROM license_bindings WHERE license_id = ? AND kind = ? AND value = ?",
        (license_id, kind, value),
    )
    if not deleted:
        return False
    await conn.execute(
        "UPDATE licenses SET updated_at = ?, revision = revision + 1 WHERE id = ?",
        (now, license_id),
    )
    return True


async def lapsed_license_ids(conn: Connection, now: int, limit: int) -> list[int]:
    """Active or pending licenses whose expiry has passed (the expiry sweep), oldest first."""
    rows = await conn.fetch_all(
        "SELECT id FROM licenses WHERE status IN ('active', 'pending')"
        " AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, id LIMIT ?",
        (now, limit),
    )
    return [int(row["id"]) for row in rows]

"""Queries on the verification attempt log and its hourly roll-up.

The inserts themselves run in each backend's attempt writer (group commit: one transaction per
batch, `SqliteAttemptWriter` / `PostgresAttemptWriter`), with the SQL defined here once.
"""

from __future__ import annotations

from collections.abc import Sequence

from license_server.db.connection import Connection, Row

# The order of `Attempt.row()` (licensing/attempt_log.py); tests/test_attempt_log.py holds the
# two together.
ATTEMPT_COLUMNS = (
    "at_ms",
    "endpoint",
    "source_ip",
    "reported_ip",
    "domain_raw",
    "domain",
    "directory",
    "license_id",
    "key_hash",
    "product",
    "result",
    "reason",
    "client_version",
    "user_agent",
    "latency_us",
)
INSERT = (
    f"INSERT INTO verification_attempts ({', '.join(ATTEMPT_COLUMNS)}) "  # noqa: S608 # nosec B608
    f"VALUES ({', '.join('?' for _ in ATTEMPT_COLUMNS)})"
)

TOUCH = (
    "UPDATE licenses SET last_access_at = ? WHERE id = ? "
    "AND (last_access_at IS NULL OR last_access_at < ?)"
)


def touch_rows(seen: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(license id, unix seconds) pairs as TOUCH parameters, in license id order: two
    instances' batches then lock the rows they share in the same order (no deadlock)."""
    return [(at, license_id, at) for license_id, at in sorted(seen)]


async def roll_up_before(conn: Connection, cutoff_ms: int) -> None:
    """Fold attempts older than the cutoff into hourly counts (added to existing counts)."""
    await conn.execute(
        "INSERT INTO attempt_rollups (hour, endpoint, license_id, result, reason, attempts) "
        "SELECT (at_ms / 3600000) * 3600, endpoint, COALESCE(license_id, 0), result, reason, "
        "COUNT(*) FROM verification_attempts WHERE at_ms < ? "
        "GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (hour, endpoint, license_id, result, reason) "
        "DO UPDATE SET attempts = attempt_rollups.attempts + excluded.attempts",
        (cutoff_ms,),
    )


async def oldest_at_ms(conn: Connection) -> int | None:
    return await conn.fetch_value("SELECT MIN(at_ms) FROM verification_attempts")


async def delete_before(conn: Connection, cutoff_ms: int) -> int:
    return await conn.execute("DELETE FROM verification_attempts WHERE at_ms < ?", (cutoff_ms,))


async def recent_for_license(conn: Connection, license_id: int, limit: int) -> list[Row]:
    """The newest attempts of one license (the (license_id, at_ms) index)."""
    return await conn.fetch_all(
        "SELECT at_ms, endpoint, source_ip, domain, result, reason, client_version"
        " FROM verification_attempts WHERE license_id = ? ORDER BY at_ms DESC LIMIT ?",
        (license_id, limit),
    )


# -- the admin's attempt log (web/admin/attempts.py, staff/log_desk.py) ----------------------

# Equality filters the page offers: column -> column (the names are the filter's keys).
FILTER_COLUMNS = ("result", "reason", "product", "source_ip", "domain", "license_id")
# Filters with an index (migrations 2 and 9), most selective first.
_LEADS = ("domain", "license_id", "source_ip")
PAGE_COLUMNS = (
    "id, at_ms, endpoint, source_ip, reported_ip, domain_raw, domain, directory, license_id,"
    " product, result, reason, client_version, user_agent, latency_us"
)


def _attempt_filter(
    equal: dict[str, object],
    ip_ranges: Sequence[tuple[str, str]],
    since_ms: int | None,
    until_ms: int | None,
) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    # One filter leads, the most selective that has an index (a domain, a license, an address);
    # the others are written so that no index serves them (`col || ''`, `col + 0`,
    # on both engines). Without it SQLite, which keeps no statistics here, may walk a large
    # index range (every refusal) and sort it to find the few rows of one domain.
    lead = next((column for column in _LEADS if column in equal), None)
    for column in FILTER_COLUMNS:
        if column in equal:
            if column == lead or column not in _LEADS:
                where.append(f"{column} = ?")
            elif column == "license_id":
                where.append("license_id + 0 = ?")
            else:
                where.append(f"{column} || '' = ?")
            params.append(equal[column])
    if ip_ranges:
        # Text ranges of dotted-quad prefixes ('203.0.113.' <= ip < '203.0.113/'): exact for
        # octet-aligned IPv4 ranges, and one range of the source_ip index each (when nothing
        # more selective leads).
        ip = "source_ip" if lead is None else "source_ip || ''"
        ranges = " OR ".join(f"({ip} >= ? AND {ip} < ?)" for _ in ip_ranges)
        where.append(f"({ranges})")
        for low, high in ip_ranges:
            params += [low, high]
    if since_ms is not None:
        where.append("at_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("at_ms < ?")
        params.append(until_ms)
    return where, params


async def attempt_page(
    conn: Connection,
    *,
    equal: dict[str, object],
    ip_ranges: Sequence[tuple[str, str]] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
    after: tuple[int, int] | None = None,
    limit: int,
) -> list[Row]:
    """Attempts newest first, by (at_ms, id) descending, continuing below `after` (the
    (at_ms, id) of the last row shown: keyset pagination, never OFFSET). Ordered by time and not
    by id alone so that every filter is one range of an index that ends with at_ms (migrations
    2 and 12): a domain, an address, a result, a license, a time range."""
    where, params = _attempt_filter(equal, ip_ranges, since_ms, until_ms)
    if after is not None:
        # The first term is the index range; the second only sorts out ties on at_ms.
        where.append("at_ms <= ? AND (at_ms < ? OR id < ?)")
        params += [after[0], after[0], after[1]]
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    # ruff S608 / bandit B608: columns and clauses are the constants above; values are params.
    return await conn.fetch_all(
        f"SELECT {PAGE_COLUMNS} FROM verification_attempts {clause}"  # noqa: S608 # nosec B608
        "ORDER BY at_ms DESC, id DESC LIMIT ?",
        [*params, limit],
    )


async def attempt_position(conn: Connection, attempt_id: int) -> int | None:
    """The at_ms of one attempt: where a page that continues after it starts."""
    return await conn.fetch_value(
        "SELECT at_ms FROM verification_attempts WHERE id = ?", (attempt_id,)
    )

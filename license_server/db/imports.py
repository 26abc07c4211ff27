"""Queries for bulk imports (the WHMCS Licensing Addon import): set-wise look-ups and inserts.

An import checks and writes hundreds of licenses per transaction, so these work on a whole
batch at once instead of one round trip per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from license_server.db.connection import Connection

# Stays below every SQLite build's limit on bound parameters (999 before 3.32).
_MAX_PARAMETERS = 500


async def product_codes_by_key_hash(
    conn: Connection, key_hashes: Sequence[bytes]
) -> dict[bytes, str]:
    """For the hashes that already have a license: the code of that license's product."""
    found: dict[bytes, str] = {}
    for start in range(0, len(key_hashes), _MAX_PARAMETERS):
        chunk = key_hashes[start : start + _MAX_PARAMETERS]
        placeholders = ", ".join("?" for _ in chunk)
        query = (
            "SELECT licenses.key_hash, products.code FROM licenses "  # noqa: S608 - "?" only # nosec B608
            "JOIN products ON products.id = licenses.product_id "
            f"WHERE licenses.key_hash IN ({placeholders})"
        )
        rows = await conn.fetch_all(query, list(chunk))
        found.update((bytes(row["key_hash"]), row["code"]) for row in rows)
    return found


async def insert_bindings(
    conn: Connection, rows: Iterable[tuple[int, str, str, str, bool, int, int]]
) -> None:
    """Insert (license_id, kind, value, raw_value, is_dev, created_at, last_seen_at) rows.

    Unlike `licenses.upsert_binding` (a live check: first and last seen are both now), an
    imported binding keeps when it was last seen in the old system.
    """
    await conn.execute_many(
        "INSERT INTO license_bindings "
        "(license_id, kind, value, raw_value, is_dev, created_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        list(rows),
    )

"""Queries on products (codes compare case-insensitively: see `product_by_code`)."""

from __future__ import annotations

from typing import Any

import aiosqlite

_COLUMNS = (
    "code, name, key_prefix, local_key_days, grace_days, seats, dev_host_allowance, features, "
    "whmcs_secret, allow_domain_conflict, allow_ip_conflict, allow_directory_conflict, "
    "free_trial, max_reissues, created_at, updated_at"
)


async def insert_product(conn: aiosqlite.Connection, row: dict[str, Any]) -> int:
    placeholders = ", ".join("?" for _ in _COLUMNS.split(","))
    async with conn.execute(
        f"INSERT INTO products ({_COLUMNS}) VALUES ({placeholders}) RETURNING id",  # noqa: S608 # nosec B608
        [row[name.strip()] for name in _COLUMNS.split(",")],
    ) as cur:
        (product_id,) = await cur.fetchone()
    return int(product_id)


async def product_by(conn: aiosqlite.Connection, column: str, value: object) -> dict | None:
    if column == "code":
        return await product_by_code(conn, str(value))
    if column not in ("id", "key_prefix"):
        raise ValueError(column)
    async with conn.execute(
        f"SELECT * FROM products WHERE {column} = ?",  # noqa: S608 - whitelisted # nosec B608
        (value,),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else dict(row)


async def product_by_code(conn: aiosqlite.Connection, code: str) -> dict | None:
    """Product codes are case-insensitive: new ones are stored lower-case, and rows created
    before that keep their case and are still found. Should two rows differ only in case
    (possible only in a database from before), the exact spelling wins. Products are few, so
    the scan that `lower()` implies is cheap, and it is never on the verify path."""
    async with conn.execute(
        "SELECT * FROM products WHERE lower(code) = lower(?) ORDER BY code = ? DESC, id LIMIT 1",
        (code, code),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else dict(row)


UPDATABLE = frozenset(
    {
        "name",
        "seats",
        "local_key_days",
        "grace_days",
        "dev_host_allowance",
        "features",
        "whmcs_secret",
        "allow_domain_conflict",
        "allow_ip_conflict",
        "allow_directory_conflict",
        "free_trial",
        "max_reissues",
        "updated_at",
    }
)


async def update_product(conn: aiosqlite.Connection, product_id: int, changes: dict) -> None:
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await conn.execute(
        f"UPDATE products SET {assignments} WHERE id = ?",  # noqa: S608 - whitelisted # nosec B608
        [*changes.values(), product_id],
    )

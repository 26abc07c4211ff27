"""Queries on products (codes compare case-insensitively: see `product_by_code`)."""

from __future__ import annotations

from typing import Any

from license_server.db.connection import Connection, Row

_COLUMNS = (
    "code, name, key_prefix, local_key_days, grace_days, seats, dev_host_allowance, features, "
    "whmcs_secret, allow_domain_conflict, allow_ip_conflict, allow_directory_conflict, "
    "free_trial, max_reissues, reissue_cooldown_hours, created_at, updated_at"
)


async def insert_product(conn: Connection, row: dict[str, Any]) -> int:
    placeholders = ", ".join("?" for _ in _COLUMNS.split(","))
    product_id = await conn.fetch_value(
        f"INSERT INTO products ({_COLUMNS}) VALUES ({placeholders}) RETURNING id",  # noqa: S608 # nosec B608
        [row[name.strip()] for name in _COLUMNS.split(",")],
    )
    return int(product_id)


async def product_by(conn: Connection, column: str, value: object) -> Row | None:
    if column == "code":
        return await product_by_code(conn, str(value))
    if column not in ("id", "key_prefix"):
        raise ValueError(column)
    return await conn.fetch_one(
        f"SELECT * FROM products WHERE {column} = ?",  # noqa: S608 - whitelisted # nosec B608
        (value,),
    )


async def product_by_code(conn: Connection, code: str) -> Row | None:
    """Product codes are case-insensitive: new ones are stored lower-case, and rows created
    before that keep their case and are still found. Should two rows differ only in case
    (possible only in a database from before), the exact spelling wins. Products are few, so
    the scan that `lower()` implies is cheap, and it is never on the verify path."""
    return await conn.fetch_one(
        "SELECT * FROM products WHERE lower(code) = lower(?) ORDER BY code = ? DESC, id LIMIT 1",
        (code, code),
    )


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
        "reissue_cooldown_hours",
        "updated_at",
    }
)


async def update_product(conn: Connection, product_id: int, changes: dict) -> None:
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await conn.execute(
        f"UPDATE products SET {assignments} WHERE id = ?",  # noqa: S608 - whitelisted # nosec B608
        [*changes.values(), product_id],
    )


async def all_products(conn: Connection) -> list[Row]:
    """Every product (they are few), by code."""
    return await conn.fetch_all("SELECT * FROM products ORDER BY code")

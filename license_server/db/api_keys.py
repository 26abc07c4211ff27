"""Queries on API keys (the vendor API's credentials) and their idempotency records."""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def insert_api_key(
    conn: Connection,
    *,
    prefix: str,
    secret_hash: bytes,
    name: str,
    scopes: str,
    created_by: str,
    created_at: int,
    expires_at: int | None,
) -> int:
    key_id = await conn.fetch_value(
        "INSERT INTO api_keys (prefix, secret_hash, name, scopes, created_by, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (prefix, secret_hash, name, scopes, created_by, created_at, expires_at),
    )
    return int(key_id)


async def api_key_by_prefix(conn: Connection, prefix: str) -> Row | None:
    return await conn.fetch_one("SELECT * FROM api_keys WHERE prefix = ?", (prefix,))


async def api_key_by_id(conn: Connection, key_id: int) -> Row | None:
    return await conn.fetch_one("SELECT * FROM api_keys WHERE id = ?", (key_id,))


async def all_api_keys(conn: Connection) -> list[Row]:
    """Every key, newest first (a vendor has a handful)."""
    return await conn.fetch_all("SELECT * FROM api_keys ORDER BY id DESC")


async def revoke_api_key(conn: Connection, key_id: int, now: int) -> bool:
    """True if the key was live and is now revoked."""
    changed = await conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
    )
    return changed == 1


async def touch_api_key(conn: Connection, key_id: int, now: int, every: int) -> None:
    """Record a use, unless one was recorded less than `every` seconds ago (by any process)."""
    await conn.execute(
        "UPDATE api_keys SET last_used_at = ?"
        " WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
        (now, key_id, now - every),
    )


# -- idempotency --------------------------------------------------------------------------


async def claim_idempotency_key(
    conn: Connection, api_key_id: int, key: str, fingerprint: bytes, now: int
) -> int:
    """Insert the record of a request about to run; UniqueViolation if the key is taken."""
    row_id = await conn.fetch_value(
        "INSERT INTO api_idempotency (api_key_id, idempotency_key, fingerprint, created_at)"
        " VALUES (?, ?, ?, ?) RETURNING id",
        (api_key_id, key, fingerprint, now),
    )
    return int(row_id)


async def idempotency_record(conn: Connection, api_key_id: int, key: str) -> Row | None:
    return await conn.fetch_one(
        "SELECT * FROM api_idempotency WHERE api_key_id = ? AND idempotency_key = ?",
        (api_key_id, key),
    )


async def store_idempotent_answer(
    conn: Connection, row_id: int, status: int, headers: str, body: bytes
) -> None:
    await conn.execute(
        "UPDATE api_idempotency SET status = ?, headers = ?, body = ? WHERE id = ?",
        (status, headers, body, row_id),
    )


async def release_idempotency_key(conn: Connection, row_id: int) -> None:
    """Forget a request that did not complete (it may be sent again with the same key)."""
    await conn.execute("DELETE FROM api_idempotency WHERE id = ?", (row_id,))


async def prune_idempotency_keys(conn: Connection, older_than: int) -> int:
    return await conn.execute("DELETE FROM api_idempotency WHERE created_at < ?", (older_than,))

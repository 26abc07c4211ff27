"""Queries on access-token families and refresh tokens (staff/api_tokens.py, migration 14)."""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def insert_family(conn: Connection, api_key_id: int, now: int) -> int:
    family_id = await conn.fetch_value(
        "INSERT INTO api_token_families (api_key_id, created_at) VALUES (?, ?) RETURNING id",
        (api_key_id, now),
    )
    return int(family_id)


async def insert_refresh_token(
    conn: Connection, family_id: int, token_hash: bytes, now: int, expires_at: int
) -> int:
    row_id = await conn.fetch_value(
        "INSERT INTO api_refresh_tokens (family_id, token_hash, created_at, expires_at)"
        " VALUES (?, ?, ?, ?) RETURNING id",
        (family_id, token_hash, now, expires_at),
    )
    return int(row_id)


async def refresh_token_by_hash(conn: Connection, token_hash: bytes) -> Row | None:
    """The refresh token, its family's state and its API key's id (one indexed read)."""
    return await conn.fetch_one(
        "SELECT t.id, t.family_id, t.expires_at, t.spent_at, f.api_key_id,"
        " f.revoked_at AS family_revoked_at"
        " FROM api_refresh_tokens t JOIN api_token_families f ON f.id = t.family_id"
        " WHERE t.token_hash = ?",
        (token_hash,),
    )


async def spend_refresh_token(conn: Connection, token_id: int, now: int) -> bool:
    """Mark a refresh token used; False if it already was (by a concurrent request too)."""
    changed = await conn.execute(
        "UPDATE api_refresh_tokens SET spent_at = ? WHERE id = ? AND spent_at IS NULL",
        (now, token_id),
    )
    return changed == 1


async def revoke_family(conn: Connection, family_id: int, now: int, reason: str) -> bool:
    """Revoke a family and spend every refresh token of it; False if it was revoked already."""
    changed = await conn.execute(
        "UPDATE api_token_families SET revoked_at = ?, revoked_reason = ?"
        " WHERE id = ? AND revoked_at IS NULL",
        (now, reason, family_id),
    )
    await conn.execute(
        "UPDATE api_refresh_tokens SET spent_at = ? WHERE family_id = ? AND spent_at IS NULL",
        (now, family_id),
    )
    return changed == 1


async def revoke_families_of_key(conn: Connection, api_key_id: int, now: int) -> int:
    """Revoke every live family of an API key (the key was revoked); how many."""
    families = await conn.fetch_all(
        "SELECT id FROM api_token_families WHERE api_key_id = ? AND revoked_at IS NULL",
        (api_key_id,),
    )
    for row in families:
        await revoke_family(conn, row["id"], now, "api key revoked")
    return len(families)


async def family_for_access(conn: Connection, family_id: int) -> Row | None:
    """What an access token's check needs, by primary key: the family's revocation and its
    API key (whose revocation and expiry end the token too)."""
    return await conn.fetch_one(
        "SELECT f.revoked_at AS family_revoked_at, k.*"
        " FROM api_token_families f JOIN api_keys k ON k.id = f.api_key_id WHERE f.id = ?",
        (family_id,),
    )


async def prune_expired(conn: Connection, older_than: int) -> None:
    """Forget refresh tokens expired before `older_than`, then families left without any
    (their access tokens expired long before their last refresh token did)."""
    await conn.execute("DELETE FROM api_refresh_tokens WHERE expires_at < ?", (older_than,))
    await conn.execute(
        "DELETE FROM api_token_families WHERE created_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM api_refresh_tokens t WHERE t.family_id = api_token_families.id)",
        (older_than,),
    )

"""Queries of the customer page (/activate): customer sessions and e-mailed confirmation links.

Both store only a SHA-256 of their token (a database read does not hand out a usable cookie or
link); the caller makes the tokens and their hashes (web/portal/sessions.py, confirmations.py).
"""

from __future__ import annotations

from license_server.db.connection import Connection, Row

# -- sessions ---------------------------------------------------------------------------------


async def insert_session(
    conn: Connection, token_hash: bytes, license_id: int, lkh: str, now: int
) -> None:
    await conn.execute(
        "INSERT INTO portal_sessions (token_hash, license_id, lkh, created_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (token_hash, license_id, lkh, now, now),
    )


async def session_by_hash(conn: Connection, token_hash: bytes) -> Row | None:
    return await conn.fetch_one("SELECT * FROM portal_sessions WHERE token_hash = ?", (token_hash,))


async def touch_session(conn: Connection, session_id: int, now: int) -> None:
    await conn.execute(
        "UPDATE portal_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id)
    )


async def delete_session(conn: Connection, token_hash: bytes) -> int:
    return await conn.execute("DELETE FROM portal_sessions WHERE token_hash = ?", (token_hash,))


async def delete_stale_sessions(conn: Connection, idle_before: int, created_before: int) -> int:
    """Sessions idle since `idle_before` or older than `created_before` (absolute timeout)."""
    return await conn.execute(
        "DELETE FROM portal_sessions WHERE last_seen_at < ? OR created_at < ?",
        (idle_before, created_before),
    )


# -- confirmation links -----------------------------------------------------------------------


async def insert_confirmation(
    conn: Connection,
    token_hash: bytes,
    license_id: int,
    action: str,
    value: str,
    now: int,
    expires_at: int,
) -> None:
    await conn.execute(
        "INSERT INTO portal_confirmations "
        "(token_hash, license_id, action, value, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, license_id, action, value, now, expires_at),
    )


async def confirmation_by_hash(conn: Connection, token_hash: bytes) -> Row | None:
    return await conn.fetch_one(
        "SELECT * FROM portal_confirmations WHERE token_hash = ?", (token_hash,)
    )


async def spend_confirmation(conn: Connection, token_hash: bytes, now: int) -> bool:
    """Mark the link used; False if it was used already or has expired (single use: of two
    concurrent spends, one updates the row and the other finds it used)."""
    return (
        await conn.execute(
            "UPDATE portal_confirmations SET used_at = ? "
            "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
            (now, token_hash, now),
        )
        == 1
    )


async def delete_old_confirmations(conn: Connection, expired_before: int) -> int:
    return await conn.execute(
        "DELETE FROM portal_confirmations WHERE expires_at < ?", (expired_before,)
    )

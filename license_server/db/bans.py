"""Queries on banned domains and IPs."""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def all_bans(conn: Connection) -> list[Row]:
    return await conn.fetch_all("SELECT kind, value, reason, created_at FROM bans ORDER BY id")


async def add_ban(conn: Connection, kind: str, value: str, reason: str, now: int) -> None:
    await conn.execute(
        "INSERT INTO bans (kind, value, reason, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason",
        (kind, value, reason, now),
    )


async def remove_ban(conn: Connection, kind: str, value: str) -> bool:
    return await conn.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value)) > 0

"""Queries on banned domains and IPs."""

from __future__ import annotations

import aiosqlite


async def all_bans(conn: aiosqlite.Connection) -> list[dict]:
    async with conn.execute("SELECT kind, value, reason, created_at FROM bans ORDER BY id") as cur:
        return [dict(row) for row in await cur.fetchall()]


async def add_ban(conn: aiosqlite.Connection, kind: str, value: str, reason: str, now: int) -> None:
    await conn.execute(
        "INSERT INTO bans (kind, value, reason, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason",
        (kind, value, reason, now),
    )


async def remove_ban(conn: aiosqlite.Connection, kind: str, value: str) -> bool:
    async with conn.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value)) as cur:
        return cur.rowcount > 0

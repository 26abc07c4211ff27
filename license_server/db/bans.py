"""Queries on banned domains and IPs."""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def all_bans(conn: Connection) -> list[Row]:
    return await conn.fetch_all("SELECT kind, value, reason, created_at FROM bans ORDER BY id")


async def add_ban(
    conn: Connection, kind: str, value: str, reason: str, now: int, created_by: str = ""
) -> None:
    """A new ban, or a new reason (and who gave it) for an existing one."""
    await conn.execute(
        "INSERT INTO bans (kind, value, reason, created_at, created_by) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason, "
        "created_by = excluded.created_by",
        (kind, value, reason, now, created_by),
    )


async def remove_ban(conn: Connection, kind: str, value: str) -> bool:
    return await conn.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value)) > 0


# -- the admin's bans page (web/admin/bans.py, staff/log_desk.py) ----------------------------


async def ban_page(conn: Connection, *, before_id: int | None, limit: int) -> list[Row]:
    """Bans newest first, by id descending from `before_id` (keyset pagination)."""
    if before_id is None:
        return await conn.fetch_all(
            "SELECT id, kind, value, reason, created_at, created_by FROM bans"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    return await conn.fetch_all(
        "SELECT id, kind, value, reason, created_at, created_by FROM bans"
        " WHERE id < ? ORDER BY id DESC LIMIT ?",
        (before_id, limit),
    )


async def ban_of(conn: Connection, kind: str, value: str) -> Row | None:
    """One ban as it is now (the audit row's "before")."""
    return await conn.fetch_one(
        "SELECT kind, value, reason, created_at, created_by FROM bans WHERE kind = ? AND value = ?",
        (kind, value),
    )


async def ban_by_id(conn: Connection, ban_id: int) -> Row | None:
    return await conn.fetch_one(
        "SELECT id, kind, value, reason, created_at, created_by FROM bans WHERE id = ?", (ban_id,)
    )


async def ban_by_value(conn: Connection, kind: str, value: str) -> Row | None:
    return await conn.fetch_one(
        "SELECT id, kind, value, reason, created_at, created_by FROM bans"
        " WHERE kind = ? AND value = ?",
        (kind, value),
    )

"""Queries on the security events (sign-in, MFA, permission denied, rate limited, ...).

Kept apart from the audit log (`audit_log`, staff actions, hash-chained): security events are
many, mostly refusals by nobody in particular, and pruned after a retention period, which a
hash chain would forbid. One INSERT per event, nothing read first, so that recording never
costs the request it describes more than that (staff/security_events.py decides what goes
in). Pages are keyset pages, newest first, every filter one index range (migration 10).
"""

from __future__ import annotations

from dataclasses import dataclass

from license_server.db.connection import Connection, Row
from license_server.db.where import Where


@dataclass(frozen=True, slots=True)
class EventFilter:
    kind: str | None = None
    account_id: int | None = None
    email_hash: bytes | None = None  # with account_id: events of the account OR of this text
    source_ip: str | None = None
    since: int | None = None  # at >= since
    until: int | None = None  # at < until


async def insert_event(
    conn: Connection,
    *,
    at: int,
    kind: str,
    account_id: int | None,
    email: str,
    email_hash: bytes | None,
    source_ip: str,
    user_agent: str,
    detail: str,
) -> None:
    await conn.execute(
        "INSERT INTO security_events (at, kind, account_id, email, email_hash, source_ip,"
        " user_agent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (at, kind, account_id, email, email_hash, source_ip, user_agent, detail),
    )


async def events_page(
    conn: Connection, where: EventFilter, before_id: int | None, limit: int
) -> list[Row]:
    """Newest first, `limit` rows with id < `before_id` matching every filter given."""
    where_ = Where().keyset(before_id).equal("kind", where.kind)
    who = Where().equal("account_id", where.account_id).equal("email_hash", where.email_hash)
    if who.clauses:  # the account's events OR those of the text typed for it
        where_.add("(" + " OR ".join(who.clauses) + ")", *who.params)
    where_.equal("source_ip", where.source_ip).time_range("at", where.since, where.until)
    # ruff S608 / bandit B608: only db/where.py's fixed fragments are joined.
    sql = f"SELECT * FROM security_events{where_.sql()} ORDER BY id DESC LIMIT ?"  # noqa: S608 # nosec B608
    rows = await conn.fetch_all(sql, (*where_.params, limit))
    for row in rows:
        if row["email_hash"] is not None:
            row["email_hash"] = bytes(row["email_hash"])
    return rows


async def prune_events(conn: Connection, before: int, limit: int) -> int:
    """Delete up to `limit` of the oldest events older than `before` (short transactions)."""
    return await conn.execute(
        "DELETE FROM security_events WHERE id IN"
        " (SELECT id FROM security_events WHERE at < ? ORDER BY id LIMIT ?)",
        (before, limit),
    )


async def recent_of_kinds(
    conn: Connection, kinds: tuple[str, ...], since: int, limit: int
) -> list[Row]:
    """Events of `kinds` at or after `since`, oldest first, at most `limit` (the newest kept):
    what the sign-in detectors rebuild their state from at start-up."""
    marks = ", ".join("?" for _ in kinds)
    # ruff S608 / bandit B608: only placeholders are joined in.
    sql = (
        "SELECT id, at, kind, account_id, source_ip FROM security_events"  # noqa: S608 # nosec B608
        f" WHERE at >= ? AND kind IN ({marks}) ORDER BY id DESC LIMIT ?"
    )
    rows = await conn.fetch_all(sql, (since, *kinds, limit))
    return list(reversed(rows))

"""The audit log as the admin's audit page reads it: filtered keyset pages, newest first.

The rows are written (and chained) by licensing/audit.py through db/staff.py; this only reads.
Filters on actor, exact action and target are index ranges of migration 10.
"""

from __future__ import annotations

from dataclasses import dataclass

from license_server.db.connection import Connection, Row
from license_server.db.where import Where


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor_kind: str | None = None
    actor_id: str | None = None  # only with actor_kind
    action: str | None = None  # exact, or a prefix when it ends with "." ("license.")
    target: str | None = None  # exact ("license:12")
    since: int | None = None  # at >= since
    until: int | None = None  # at < until


async def audit_rows(
    conn: Connection, where: AuditFilter, before_id: int | None, limit: int
) -> list[Row]:
    where_ = Where().keyset(before_id)
    if where.actor_kind is not None:
        where_.equal("actor_kind", where.actor_kind).equal("actor_id", where.actor_id)
    if where.action is not None and where.action.endswith("."):
        # substr, not LIKE (no wildcards to escape) nor a range (PostgreSQL's collation
        # may not sort "." and "/" bytewise): the same answer on both engines.
        where_.add("substr(action, 1, ?) = ?", len(where.action), where.action)
    else:
        where_.equal("action", where.action)
    where_.equal("target", where.target).time_range("at", where.since, where.until)
    sql = "SELECT id, at, actor_kind, actor_id, action, target, detail, source_ip FROM audit_log"
    return await conn.fetch_all(
        sql + where_.sql() + " ORDER BY id DESC LIMIT ?", (*where_.params, limit)
    )

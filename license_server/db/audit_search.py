"""The audit log as the admin's audit page reads it: filtered keyset pages, newest first.

The rows are written (and chained) by licensing/audit.py through db/staff.py; this only reads.
Filters on actor, exact action and target are index ranges of migration 10.
"""

from __future__ import annotations

from dataclasses import dataclass

from license_server.db.connection import Connection, Row


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
    clauses, params = [], []
    if before_id is not None:
        clauses.append("id < ?")
        params.append(before_id)
    if where.actor_kind is not None:
        clauses.append("actor_kind = ?")
        params.append(where.actor_kind)
        if where.actor_id is not None:
            clauses.append("actor_id = ?")
            params.append(where.actor_id)
    if where.action is not None:
        if where.action.endswith("."):
            # substr, not LIKE (no wildcards to escape) nor a range (PostgreSQL's collation
            # may not sort "." and "/" bytewise): the same answer on both engines.
            clauses.append("substr(action, 1, ?) = ?")
            params += [len(where.action), where.action]
        else:
            clauses.append("action = ?")
            params.append(where.action)
    if where.target is not None:
        clauses.append("target = ?")
        params.append(where.target)
    if where.since is not None:
        clauses.append("at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("at < ?")
        params.append(where.until)
    sql = "SELECT id, at, actor_kind, actor_id, action, target, detail, source_ip FROM audit_log"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)  # fixed clauses only; values are parameters
    params.append(limit)
    return await conn.fetch_all(sql + " ORDER BY id DESC LIMIT ?", tuple(params))

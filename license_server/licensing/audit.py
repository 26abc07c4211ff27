"""The audit log: who did what, when, from where; append-only and hash-chained.

Every row carries `row_hash` = a keyed hash (HMAC-SHA-256 under a key derived from the data key)
of the previous row's hash and its own fields, so that editing or deleting a row breaks the
chain at that row, and someone with only the database cannot forge a consistent new chain
(ASVS 4.0.3 V7.3.3, log integrity). Appends take a lock on the log's tail, so concurrent writers
(several instances on PostgreSQL) never fork it. `verify` walks the chain and names the first
row that does not fit (returning to the event loop every `_STEP` rows); `run.py audit-verify`
and the admin's audit page run it. What a chain cannot show: rows cut off at the end (the
newest ones); an external copy of the newest hash would, and is not kept yet.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass

from license_server.crypto.fields import LookupHasher
from license_server.db import staff as staff_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.licensing.actors import Actor

_PURPOSE = "audit-chain"
_PAGE = 1000
# Rows hashed between two returns to the event loop: a check run by the admin page shares the
# loop with verification (about 40 us a row: 100 rows hold it some 4 ms, a page of 1000 held
# it 50-140 ms).
_STEP = 100


@dataclass(frozen=True, slots=True)
class Broken:
    row_id: int
    why: str


class AuditLog:
    def __init__(self, hasher: LookupHasher) -> None:
        self._hasher = hasher

    def _seal(self, prev_hash: bytes | None, fields: dict) -> bytes:
        body = json.dumps(
            [(prev_hash or b"").hex(), *(fields[name] for name in staff_rows.AUDIT_FIELDS)],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return self._hasher.hash(_PURPOSE, body)

    async def append(
        self,
        conn: Connection,
        *,
        at: int,
        actor: Actor,
        action: str,
        target: str = "",
        detail: dict | None = None,
        source_ip: str = "",
    ) -> None:
        """Inside the caller's transaction: the row commits with the change it records."""
        await self.append_all(conn, at=at, actor=actor, entries=[(action, target, detail)],
                              source_ip=source_ip)  # fmt: skip

    async def append_all(
        self,
        conn: Connection,
        *,
        at: int,
        actor: Actor,
        entries: list[tuple[str, str, dict | None]],
        source_ip: str = "",
    ) -> None:
        """Several (action, target, detail) rows of one transaction: the tail is locked and
        read once, the rows chained in memory (an import of hundreds of licenses)."""
        if not entries:
            return
        await conn.lock_name("audit-log")  # one tail: appends never fork the chain
        prev_hash = await staff_rows.last_audit_hash(conn)
        rows = []
        for action, target, detail in entries:
            fields = {
                "at": at,
                "actor_kind": str(actor.kind),
                "actor_id": actor.id,
                "action": action,
                "target": target,
                "detail": json.dumps(detail or {}, sort_keys=True, ensure_ascii=False),
                "source_ip": source_ip,
            }
            row_hash = self._seal(prev_hash, fields)
            rows.append((fields, prev_hash, row_hash))
            prev_hash = row_hash
        # One batch, not a statement per row (an import's 500 in its write transaction).
        await staff_rows.insert_audit(conn, rows)

    async def verify(self, db: Database) -> tuple[int, Broken | None]:
        """(rows checked, the first row that breaks the chain or None)."""
        checked, last_id, prev = 0, 0, None
        while True:
            async with db.read() as conn:
                rows = await staff_rows.audit_rows_after(conn, last_id, _PAGE)
            if not rows:
                return checked, None
            for row in rows:
                if row["prev_hash"] != prev:
                    return checked, Broken(row["id"], "the row before it was removed or edited")
                expected = self._seal(prev, row)
                if row["row_hash"] is None or not hmac.compare_digest(expected, row["row_hash"]):
                    return checked, Broken(row["id"], "its content was changed")
                prev, last_id = row["row_hash"], row["id"]
                checked += 1
                if checked % _STEP == 0:
                    await asyncio.sleep(0)

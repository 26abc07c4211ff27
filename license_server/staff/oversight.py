"""The audit log and the security events as staff read them, and the audit chain check.

Service functions for web/admin/audit.py and web/admin/security.py that check the permission
again (ASVS 4.0.3 V4.1.1, V4.1.3, as staff/console.py does): `audit:read` for the audit log
and its chain check, `security_event:read` for the security events.

Checking the chain (V7.3.3) is the same `AuditLog.verify` that `run.py audit-verify` runs. It
reads the log in pages of 1000 rows, each an await on the database, hashing a page in a few
milliseconds in between, so the event loop (and verification beside it) is never held longer
than that. One check runs at a time per process: a second click while one runs waits for that
one's answer instead of starting another walk of the whole log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from license_server.db import staff as staff_rows
from license_server.db.audit_search import AuditFilter, audit_rows
from license_server.db.database import Database
from license_server.db.security_events import EventFilter, events_page
from license_server.licensing.audit import AuditLog, Broken
from license_server.staff.accounts import SignedIn, StaffAccounts
from license_server.staff.console import require

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict]
    next_before: int | None  # the id to continue from, None on the last page


@dataclass(frozen=True, slots=True)
class ChainCheck:
    checked: int
    broken: Broken | None
    seconds: float


def _require_one_of(staff: SignedIn, *permissions: str) -> None:
    if not any(staff.may(permission) for permission in permissions):
        require(staff, permissions[0])  # raises PermissionDenied


class Oversight:
    def __init__(self, db: Database, audit: AuditLog, accounts: StaffAccounts) -> None:
        self._db = db
        self._audit = audit
        self._accounts = accounts
        self._check: asyncio.Task[ChainCheck] | None = None

    async def _page(self, query, where, before: int | None) -> Page:
        async with self._db.read() as conn:
            rows = await query(conn, where, before, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page(rows, rows[-1]["id"] if more and rows else None)

    async def audit_page(self, staff: SignedIn, where: AuditFilter, before: int | None) -> Page:
        require(staff, "audit:read")
        return await self._page(audit_rows, where, before)

    async def security_events(
        self, staff: SignedIn, where: EventFilter, before: int | None
    ) -> Page:
        require(staff, "security_event:read")
        return await self._page(events_page, where, before)

    async def staff_accounts(self, staff: SignedIn) -> list[staff_rows.StaffAccount]:
        """To show who an actor or an account id is, and to filter by e-mail address."""
        _require_one_of(staff, "audit:read", "security_event:read")
        return await self._accounts.all_accounts()

    def email_hash(self, typed: str) -> bytes:
        return self._accounts.events.email_hash(typed)

    async def check_chain(self, staff: SignedIn) -> ChainCheck:
        """`run.py audit-verify`'s check; joins one already running in this process."""
        require(staff, "audit:read")
        if self._check is None or self._check.done():
            self._check = asyncio.create_task(self._run_check(), name="audit-chain-check")
        # shield: a visitor who leaves does not cancel the check others may be waiting on.
        return await asyncio.shield(self._check)

    async def _run_check(self) -> ChainCheck:
        started = time.perf_counter()
        checked, broken = await self._audit.verify(self._db)
        return ChainCheck(checked, broken, time.perf_counter() - started)

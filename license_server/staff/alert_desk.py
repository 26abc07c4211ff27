"""Alerts as staff read and act on them: the list, one alert with its history, acknowledge and
resolve, the dashboard's summary.

Each function checks the permission again (ASVS 4.0.3 V4.1.1, V4.1.3; the route checked it
first): `alert:read` to read, `alert:acknowledge` to acknowledge or resolve. Resolving needs no
permission of its own: both are a member of staff's judgement on an alert, no role would hold
one without the other (license_manager and admin act on alerts; support and read_only only
read them), and the vendor API's scopes are the same two.

An alert's history (who acknowledged or resolved it, when, and what the server did on its own)
is the audit log's rows with target `alert:<id>`: written in the same transaction as each
change, hash-chained, so the page shows what the chain holds rather than a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from license_server.db import alerts as alert_rows
from license_server.db.audit_search import AuditFilter, audit_rows
from license_server.licensing import alerts
from license_server.licensing.service import LicenseService
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require

PAGE_SIZE = 50
HISTORY_LIMIT = 200
DASHBOARD_RECENT = 5


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class Summary:
    counts: dict[str, int]  # unresolved alerts per state
    recent: list[dict]  # the newest unresolved


class AlertDesk:
    def __init__(self, licenses: LicenseService) -> None:
        self._licenses = licenses

    async def page(
        self, staff: SignedIn, where: alert_rows.AlertFilter, before: int | None
    ) -> Page:
        require(staff, "alert:read")
        async with self._licenses.db.read() as conn:
            rows = await alert_rows.alert_page(conn, where, before, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page(rows, rows[-1]["id"] if more and rows else None)

    async def detectors(self, staff: SignedIn) -> list[str]:
        require(staff, "alert:read")
        async with self._licenses.db.read() as conn:
            return await alert_rows.detectors(conn)

    async def alert(self, staff: SignedIn, alert_id: int) -> tuple[dict, list[dict]]:
        """The alert and its history (audit rows, oldest first); AlertNotFound."""
        require(staff, "alert:read")
        async with self._licenses.db.read() as conn:
            row = await alert_rows.get(conn, alert_id)
            if row is None:
                raise alerts.AlertNotFound(f"no alert with id {alert_id}")
            history = await audit_rows(
                conn, AuditFilter(target=f"alert:{alert_id}"), None, HISTORY_LIMIT
            )
        return row, list(reversed(history))

    async def for_license(self, staff: SignedIn, license_id: int) -> list[dict]:
        """A license's unresolved alerts (the marker on its page); empty without alert:read."""
        if not staff.may("alert:read"):
            return []
        async with self._licenses.db.read() as conn:
            return await alert_rows.unresolved_for_license(conn, license_id)

    async def summary(self, staff: SignedIn) -> Summary:
        require(staff, "alert:read")
        async with self._licenses.db.read() as conn:
            counts = await alert_rows.count_unresolved(conn)
            recent = await alert_rows.unresolved(conn, DASHBOARD_RECENT)
        return Summary(counts, recent)

    async def acknowledge(self, staff: SignedIn, alert_id: int) -> dict:
        require(staff, "alert:acknowledge")
        return await alerts.change_state(
            self._licenses, staff.actor, alert_id, alerts.AlertState.ACKNOWLEDGED
        )

    async def resolve(self, staff: SignedIn, alert_id: int) -> dict:
        require(staff, "alert:acknowledge")
        return await alerts.change_state(
            self._licenses, staff.actor, alert_id, alerts.AlertState.RESOLVED
        )

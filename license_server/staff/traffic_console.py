"""The dashboard's traffic figures, behind `attempt:read` (checked again here, ASVS 4.0.3
V4.1.3): the hourly chart and the top refusal reasons (licensing/attempt_hours.py)."""

from __future__ import annotations

from license_server.licensing.attempt_hours import Traffic, traffic
from license_server.licensing.service import LicenseService
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require


class TrafficConsole:
    def __init__(self, licenses: LicenseService) -> None:
        self._licenses = licenses

    async def traffic(self, staff: SignedIn) -> Traffic:
        require(staff, "attempt:read")
        return await traffic(self._licenses.db, self._licenses.now())

"""Staff changes to products and issued licenses, each checking the permission again.

The admin's product page and a license's edit forms call in here; the route has checked the
permission already and every method checks it again against the signed-in role (ASVS 4.0.3
V4.1.1, V4.1.3: access control enforced at a trusted service layer), then makes the change
through the license service's single write path with the staff actor, so that the audit row
(before/after values) names who did it and the change log drops the license from every cache:
the next verification sees the change.

Permissions (staff/rbac.py): product:update for a product; license:update to extend a
license or edit its rules; license:reissue to reset its reissue count (support reissues
already, so a reset grants it nothing new); binding:release to free one binding.
"""

from __future__ import annotations

from license_server.licensing.models import License, Product
from license_server.licensing.service import LicenseService
from license_server.licensing.specs import LicenseTerms, ProductChanges
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require


class Editing:
    def __init__(self, licenses: LicenseService) -> None:
        self._licenses = licenses

    # -- products -------------------------------------------------------------------------

    async def product(self, staff: SignedIn, code: str) -> Product:
        require(staff, "product:read")
        return await self._licenses.product(code)

    async def update_product(self, staff: SignedIn, code: str, changes: ProductChanges) -> Product:
        require(staff, "product:update")
        return await self._licenses.update_product(code, changes, actor=staff.actor)

    # -- an issued license ----------------------------------------------------------------

    async def renew(self, staff: SignedIn, license_id: int, expires_at: int | None) -> License:
        """A new expiry (end of a UTC day as a timestamp) or None for no expiry."""
        require(staff, "license:update")
        return await self._licenses.renew(license_id, expires_at, actor=staff.actor)

    async def edit_terms(self, staff: SignedIn, license_id: int, terms: LicenseTerms) -> License:
        require(staff, "license:update")
        return await self._licenses.edit_terms(license_id, terms, actor=staff.actor)

    async def reset_reissues(self, staff: SignedIn, license_id: int) -> License:
        require(staff, "license:reissue")
        return await self._licenses.reset_reissues(license_id, actor=staff.actor)

    async def release_binding(
        self, staff: SignedIn, license_id: int, kind: str, value: str
    ) -> License:
        require(staff, "binding:release")
        return await self._licenses.release_binding(license_id, kind, value, actor=staff.actor)

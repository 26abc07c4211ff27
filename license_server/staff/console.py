"""What staff do in the admin, as service functions that check the permission again.

The route checks a permission before it calls in (web/admin/); every function here checks it
again against the signed-in account's role (DESIGN.md, ASVS 4.0.3 V4.1.1/V4.1.3: enforced at a
trusted service layer, not only where the request arrives), and passes the staff actor to the
license service's single write path, so that the audit log names who did it.
"""

from __future__ import annotations

from license_server.db import attempts as attempt_rows
from license_server.db.staff import StaffAccount
from license_server.licensing.lifecycle import Action
from license_server.licensing.models import License, Product
from license_server.licensing.service import LicenseService
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn, StaffAccounts

# Which permission each lifecycle action needs (staff/rbac.py's catalogue).
ACTION_PERMISSIONS: dict[Action, str] = {
    Action.SUSPEND: "license:suspend",
    Action.UNSUSPEND: "license:suspend",
    Action.REVOKE: "license:revoke",
    Action.REISSUE: "license:reissue",
}


def require(staff: SignedIn, permission: str) -> None:
    if not staff.mfa_passed:
        raise rbac.PermissionDenied(staff.account.role, permission)
    rbac.require(staff.account.role, permission)


class Console:
    def __init__(self, licenses: LicenseService, accounts: StaffAccounts) -> None:
        self._licenses = licenses
        self._accounts = accounts

    # -- products and new licenses ------------------------------------------------------

    async def products(self, staff: SignedIn) -> list[Product]:
        require(staff, "product:read")
        return await self._licenses.products()

    async def create_product(self, staff: SignedIn, spec: ProductSpec) -> Product:
        require(staff, "product:create")
        return await self._licenses.create_product(spec, actor=staff.actor)

    async def issue(self, staff: SignedIn, spec: LicenseSpec) -> tuple[License, str]:
        """A new license and its key, which the page shows this once."""
        require(staff, "license:create")
        return await self._licenses.issue(spec, actor=staff.actor)

    # -- staff --------------------------------------------------------------------------

    async def staff(self, staff: SignedIn) -> list[StaffAccount]:
        require(staff, "staff:read")
        return await self._accounts.all_accounts()

    async def invite(self, staff: SignedIn, role: str) -> str:
        require(staff, "staff:create")
        return await self._accounts.invitation(staff.actor, role)

    async def set_disabled(self, staff: SignedIn, account_id: int, disabled: bool) -> None:
        require(staff, "staff:update")
        if account_id == staff.account.id:
            raise ValueError("you cannot disable your own account")
        await self._accounts.set_disabled(account_id, disabled, actor=staff.actor)

    async def reset_second_factor(self, staff: SignedIn, account_id: int) -> None:
        require(staff, "staff:reset_mfa")
        await self._accounts.reset_second_factor(account_id, actor=staff.actor)

    async def license(self, staff: SignedIn, license_id: int) -> tuple[License, list[dict]]:
        """The license and its newest attempts."""
        require(staff, "license:read")
        license = await self._licenses.license_by_id(license_id)
        async with self._licenses.db.read() as conn:
            attempts = await attempt_rows.recent_for_license(conn, license_id, 20)
        return license, attempts

    async def apply(self, staff: SignedIn, license_id: int, action: Action) -> License:
        permission = ACTION_PERMISSIONS.get(action)
        if permission is None:
            raise ValueError(f"{action} is not done from the admin")
        require(staff, permission)
        return await self._licenses.apply(license_id, action, actor=staff.actor)

    async def reveal_key(self, staff: SignedIn, license_id: int) -> str:
        """The full key, shown once on request; the showing itself is audited."""
        require(staff, "license:reveal_key")
        key = await self._licenses.reveal_key(license_id)
        now = self._licenses.now()

        async def work(writes) -> None:
            await self._licenses.audit.append(
                writes.conn, at=now, actor=staff.actor, action="license.reveal_key",
                target=f"license:{license_id}",
            )  # fmt: skip

        await self._licenses.write(staff.actor, work)
        return key

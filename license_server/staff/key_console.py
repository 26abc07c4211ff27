"""The signing keys in the staff admin, as service functions that check the permission again.

The route checks `signing_key:*` first (web/admin/keys.py); each function here checks it again
against the signed-in account's role (ASVS 4.0.3 V4.1.1, V4.1.3) and passes the staff actor to
`SigningKeys`, the code `run.py` uses too, which audits every change.
"""

from __future__ import annotations

from license_server.crypto.keystore import KeyRecord
from license_server.licensing.signing_keys import KeyUsage, KeyView, SigningKeys
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require


class KeyConsole:
    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    @property
    def from_environment(self) -> bool:
        return self._keys.from_environment

    async def keys(self, staff: SignedIn) -> tuple[list[KeyView], dict[str, KeyUsage]]:
        """Every key (public halves only) and, for each key that does not sign, who uses it."""
        require(staff, "signing_key:read")
        views = await self._keys.keys()
        usage = await self._keys.usage([view.kid for view in views if view.state != "active"])
        return views, usage

    async def add(self, staff: SignedIn) -> KeyView:
        require(staff, "signing_key:create")
        return await self._keys.add(staff.actor)

    async def activate(self, staff: SignedIn, kid: str) -> KeyRecord:
        require(staff, "signing_key:activate")
        return await self._keys.activate(kid, staff.actor)

    async def retire(self, staff: SignedIn, kid: str) -> KeyRecord:
        require(staff, "signing_key:retire")
        return await self._keys.retire(kid, staff.actor)

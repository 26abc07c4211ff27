"""The license service: create products, issue licenses, find a license by key, change status.

Each operation is one write transaction, so a failure leaves nothing half-written. License keys
never reach the database in plain text: a keyed hash finds the row, an AES-GCM copy (bound to
`licenses.key_encrypted`) lets staff see the key again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from license_server.crypto.fields import FieldCipher, LookupHasher
from license_server.crypto.signing import Keyring
from license_server.db import dialect
from license_server.db import licenses as license_rows
from license_server.db import products as product_rows
from license_server.db.database import Database
from license_server.licensing import lifecycle
from license_server.licensing.caches import TtlCache
from license_server.licensing.license_keys import (
    MAX_LICENSE_ID,
    SignedKey,
    looks_signed,
    make_license_key,
    parse_signed_key,
)
from license_server.licensing.models import KeyKind, License, Product, Status
from license_server.licensing.repository import license_from_rows, product_from_row
from license_server.licensing.specs import (
    LicenseSpec,
    ProductChanges,
    ProductSpec,
    end_of_day_utc,
)

KEY_HASH_PURPOSE = "license-key"


class NotFound(LookupError):
    """No such product or license; the message is one line."""


class Conflict(ValueError):
    """The new record would clash with an existing one (duplicate code or prefix)."""


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """A presented key after the offline checks: what to look up and what it claims."""

    canonical: str
    key_hash: bytes
    signed: SignedKey | None


class LicenseService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        cipher: FieldCipher,
        hasher: LookupHasher,
        clock: Callable[[], float] = time.time,
        product_cache_seconds: float = 0,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.cipher = cipher
        self.hasher = hasher
        self.clock = clock
        # Called with a license id after any change to it, so caches can drop it at once;
        # with None after a product change (it is part of every cached license).
        self.change_listeners: list[Callable[[int | None], None]] = []
        # Products are few and read on every license load: kept briefly in memory.
        self._products: TtlCache[int, Product] = TtlCache(product_cache_seconds, 10_000)

    def changed(self, license_id: int | None) -> None:
        if license_id is None:
            self._products.clear()
        for listener in self.change_listeners:
            listener(license_id)

    def now(self) -> int:
        return int(self.clock())

    # -- products -------------------------------------------------------------------------

    async def create_product(self, spec: ProductSpec) -> Product:
        now = self.now()
        secret = spec.whmcs_secret
        row = {
            "code": spec.code,
            "name": spec.name,
            "key_prefix": spec.prefix(),
            "local_key_days": spec.local_key_days,
            "grace_days": spec.grace_days,
            "seats": spec.seats,
            "dev_host_allowance": spec.dev_host_allowance,
            "features": json.dumps(list(spec.features)),
            "whmcs_secret": None
            if secret is None
            else self.cipher.encrypt("products", "whmcs_secret", secret),
            "allow_domain_conflict": spec.allow_domain_conflict,
            "allow_ip_conflict": spec.allow_ip_conflict,
            "allow_directory_conflict": spec.allow_directory_conflict,
            "free_trial": spec.free_trial,
            "max_reissues": spec.max_reissues,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.db.write() as conn:
                # The UNIQUE constraint is case-sensitive; a mixed-case code from before
                # codes were folded must still block its lower-case twin.
                if await product_rows.product_by_code(conn, spec.code) is not None:
                    raise Conflict(f"a product with code {spec.code!r} exists")
                row["id"] = await product_rows.insert_product(conn, row)
        except Exception as exc:
            if dialect.is_unique_violation(exc):
                raise Conflict(
                    f"a product with code {spec.code!r} or key prefix {spec.prefix()!r} exists"
                ) from None
            raise
        return product_from_row(row)

    async def update_product(self, code: str, changes: ProductChanges) -> Product:
        product = await self.product(code)
        values = changes.model_dump(exclude_none=True, exclude={"unlimited_reissues"})
        if "whmcs_secret" in values:
            values["whmcs_secret"] = self.cipher.encrypt(
                "products", "whmcs_secret", values["whmcs_secret"]
            )
        if changes.unlimited_reissues:
            values["max_reissues"] = None
        if not values:
            raise ValueError("nothing to change")
        values["updated_at"] = self.now()
        async with self.db.write() as conn:
            await product_rows.update_product(conn, product.id, values)
        self.changed(None)
        return await self.product(code)

    async def product(self, code: str) -> Product:
        async with self.db.read() as conn:
            row = await product_rows.product_by(conn, "code", code)
        if row is None:
            raise NotFound(f"no product with code {code!r}")
        return product_from_row(row)

    async def whmcs_secret(self, product: Product) -> str | None:
        async with self.db.read() as conn:
            row = await product_rows.product_by(conn, "id", product.id)
        if row is None or row["whmcs_secret"] is None:
            return None
        return self.cipher.decrypt("products", "whmcs_secret", row["whmcs_secret"])

    # -- licenses -------------------------------------------------------------------------

    async def issue(self, spec: LicenseSpec) -> tuple[License, str]:
        """Create a license and return it with its key; the key is shown this once."""
        product = await self.product(spec.product)
        now = self.now()
        expires_at = None if spec.expires is None else end_of_day_utc(spec.expires)
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires: the expiry date must not be in the past")
        async with self.db.write() as conn:
            license_id = await self._free_license_id(conn)
            signer = self.keyring.active  # read once: the keyring may change while we wait
            key = make_license_key(signer, product.key_prefix, license_id)
            await license_rows.insert_license(
                conn,
                {
                    "id": license_id,
                    "product_id": product.id,
                    "key_hash": self.hasher.hash(KEY_HASH_PURPOSE, key),
                    "key_encrypted": self.cipher.encrypt("licenses", "key_encrypted", key),
                    "key_kind": KeyKind.SIGNED.value,
                    # So that `run.py retire` knows this key keeps its signer published.
                    "signing_kid": signer.kid,
                    "status": Status.PENDING.value,
                    "licensee_name": spec.licensee,
                    "licensee_company": spec.company,
                    "licensee_email": str(spec.email),
                    "expires_at": expires_at,
                    "seats": spec.seats,
                    "reissue_count": 0,
                    "notes": spec.notes,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await license_rows.add_rules(conn, license_id, spec.rules())
        return await self.license_by_id(license_id), key

    @staticmethod
    async def _free_license_id(conn) -> int:
        # Random ids, so a key does not reveal how many licenses a vendor has sold.
        while True:
            candidate = secrets.randbelow(MAX_LICENSE_ID) + 1
            if not await license_rows.license_id_exists(conn, candidate):
                return candidate

    def lookup_for(self, text: str) -> KeyLookup:
        """Offline checks of a presented key; raises KeyRejected for a forged signed key."""
        text = text.strip()
        signed = parse_signed_key(self.keyring, text) if looks_signed(text) else None
        canonical = signed.text if signed else text
        return KeyLookup(canonical, self.hasher.hash(KEY_HASH_PURPOSE, canonical), signed)

    async def license_by_key(self, text: str) -> License:
        license = await self.license_by_lookup(self.lookup_for(text))
        if license is None:
            raise NotFound("no license with this key")
        return license

    async def license_by_lookup(self, lookup: KeyLookup) -> License | None:
        async with self.db.read() as conn:
            row = await license_rows.license_by_hash(conn, lookup.key_hash)
            if row is None or (lookup.signed and row["id"] != lookup.signed.license_id):
                return None
            return await self._load(conn, row)

    async def license_by_id(self, license_id: int) -> License:
        async with self.db.read() as conn:
            row = await license_rows.license_by_id(conn, license_id)
            if row is None:
                raise NotFound(f"no license with id {license_id}")
            return await self._load(conn, row)

    async def reveal_key(self, license_id: int) -> str:
        async with self.db.read() as conn:
            row = await license_rows.license_by_id(conn, license_id)
        if row is None:
            raise NotFound(f"no license with id {license_id}")
        return self.cipher.decrypt("licenses", "key_encrypted", row["key_encrypted"])

    async def load(self, conn, license_id: int) -> License | None:
        """Load inside the caller's transaction (read-check-write without a race)."""
        row = await license_rows.license_by_id(conn, license_id)
        return None if row is None else await self._load(conn, row)

    async def _load(self, conn, row: dict) -> License:
        product = self._products.get(row["product_id"])
        if product is None:
            product = product_from_row(await product_rows.product_by(conn, "id", row["product_id"]))
            self._products.put(product.id, product)
        rules = await license_rows.rules_of(conn, row["id"])
        bindings = await license_rows.bindings_of(conn, row["id"])
        return license_from_rows(row, product, rules, bindings)

    async def apply(self, license_id: int, action: lifecycle.Action, **options: object) -> License:
        """Run one lifecycle action; the read-check-write happens inside one transaction."""
        now = self.now()
        async with self.db.write() as conn:
            row = await license_rows.license_by_id(conn, license_id)
            if row is None:
                raise NotFound(f"no license with id {license_id}")
            bindings = await license_rows.bindings_of(conn, license_id)
            state = lifecycle.LicenseState(
                Status(row["status"]), row["expires_at"], row["reissue_count"], bool(bindings)
            )
            if action is lifecycle.Action.REISSUE:
                product = await product_rows.product_by(conn, "id", row["product_id"])
                options.setdefault("max_reissues", product["max_reissues"])
            change = lifecycle.transition(state, action, now=now, **options)
            if change.clear_bindings:
                await license_rows.clear_bindings(conn, license_id)
            await license_rows.update_state(
                conn,
                license_id,
                status=change.status.value,
                expires_at=change.expires_at,
                reissue_count=change.reissue_count,
                now=now,
            )
        self.changed(license_id)
        return await self.license_by_id(license_id)

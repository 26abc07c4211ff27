"""The license service: create products, issue licenses, find a license by key, change status.

Every state change goes through one write path, `write(actor, work)`: one write transaction in
which the change and its change-log rows are written together (so a failure leaves nothing
half-written, and no change goes unannounced), run again whole when a concurrent transaction of
another instance got in the way, after which "license X changed" is announced to this
process's caches (`ChangeFeed`); other processes read the log. RBAC, the audit log and
webhooks hook in there, once. License keys never reach the database in plain text: a keyed hash
finds the row, an AES-GCM copy (bound to `licenses.key_encrypted`) lets staff see the key again.
Licensee e-mails neither (ASVS 4.0.3 V6.1.1): AES-GCM bound to the license's row, plus a keyed
blind index of the normalised address for exact search (`seal_email`, `email_index`); rows
from before migration 12 are sealed at start-up (`seal_legacy_emails`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from license_server.crypto.fields import FieldCipher, LookupHasher, normalise_email
from license_server.crypto.signing import Keyring
from license_server.db import changes as change_rows
from license_server.db import imports as import_rows
from license_server.db import licenses as license_rows
from license_server.db import products as product_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.db.errors import UniqueViolation
from license_server.db.licenses import NewLicense
from license_server.licensing import lifecycle, webhook_events
from license_server.licensing.actors import SYSTEM, Actor, ActorKind
from license_server.licensing.audit import AuditLog
from license_server.licensing.caches import TtlCache
from license_server.licensing.changes import Change, ChangeFeed, ChangeKind
from license_server.licensing.decision import Answer, Verdict, refused
from license_server.licensing.license_keys import (
    MAX_LICENSE_ID,
    SignedKey,
    looks_signed,
    make_license_key,
    parse_signed_key,
)
from license_server.licensing.models import Binding, KeyKind, License, Product, Status
from license_server.licensing.repository import license_from_rows, product_from_row
from license_server.licensing.specs import (
    LicenseSpec,
    LicenseTerms,
    ProductChanges,
    ProductSpec,
    end_of_day_utc,
)

KEY_HASH_PURPOSE = "license-key"
EMAIL_COLUMN = "licensee_email_encrypted"
EMAIL_INDEX_PURPOSE = "licenses.licensee_email"
MAX_BULK_ISSUE = 1000
T = TypeVar("T")
_KEEP = object()
# The product settings an update may change (the code and prefix never do), as audited.
_PRODUCT_AUDITED = (
    "name", "seats", "local_key_days", "grace_days", "dev_host_allowance", "features",
    "allow_domain_conflict", "allow_ip_conflict", "allow_directory_conflict", "free_trial",
    "max_reissues", "reissue_cooldown_hours",
)  # fmt: skip


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


@dataclass(frozen=True, slots=True)
class NewBinding:
    kind: str  # domain | ip | directory
    value: str  # normalised
    raw_value: str  # as the module sent it
    is_dev: bool = False


@dataclass(frozen=True, slots=True)
class FirstUse:
    """The verifier's decision on the license as re-read inside the write transaction."""

    verdict: Verdict
    bindings: tuple[NewBinding, ...] = ()  # to bind when the verdict is active


# decide(fresh license) -> FirstUse; may read (bans) but must not write.
Decide = Callable[[License], Awaitable[FirstUse]]
# Extra work of the caller inside a write's transaction (runs before the change).
Within = Callable[[Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ImportedLicense:
    """A license of another system to insert as it is (the WHMCS import)."""

    row: NewLicense  # id, timestamps and the sealed e-mail are filled in by the import's write
    # (kind, value, raw_value, last_seen_at or None for now)
    bindings: tuple[tuple[str, str, str, int | None], ...]
    email: str = ""  # the licensee's address, sealed once the row has its id


@dataclass(slots=True)
class _Writes:
    """One transaction of the write path: its connection, actor, clock and changes."""

    conn: Connection
    actor: Actor
    now: int
    changes: list[Change] = field(default_factory=list)
    # Per change: the audit row's target and detail ({"before": ..., "after": ...}).
    audit: list[tuple[str, dict | None]] = field(default_factory=list)
    # Per change: what its webhook event needs beyond the change (the domains bound ...).
    facts: list[dict | None] = field(default_factory=list)

    def changed(
        self,
        kind: ChangeKind,
        license_id: int | None = None,
        *,
        target: str | None = None,
        detail: dict | None = None,
        facts: dict | None = None,
    ) -> None:
        self.changes.append(Change(kind, license_id, self.actor))
        self.facts.append(facts)
        if target is None:
            target = "" if license_id is None else f"license:{license_id}"
        self.audit.append((target, detail))


class LicenseService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        cipher: FieldCipher,
        hasher: LookupHasher,
        clock: Callable[[], float] = time.time,
        product_cache_seconds: float = 0,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.cipher = cipher
        self.hasher = hasher
        self.audit = AuditLog(hasher)  # written in the same transaction as each change
        self.clock = clock
        self.feed = feed if feed is not None else ChangeFeed(db)
        # Products are few and read on every license load: kept briefly in memory.
        self._products: TtlCache[int, Product] = TtlCache(product_cache_seconds, 10_000)
        self._product_flushes = 0  # a product read that raced a flush is not cached
        self.feed.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.all_licenses:
            self._product_flushes += 1
            self._products.clear()

    def now(self) -> int:
        return int(self.clock())

    async def write(self, actor: Actor, work: Callable[[_Writes], Awaitable[T]]) -> T:
        """The single write path: one transaction, its change-log rows, then the announcement.

        Every state change goes through here (the service's own operations, first uses, and
        the ban list), with the actor that made it: where RBAC, the audit log and webhook
        events will be written, in the same transaction as the change. `work` may run more
        than once (a serialisation failure on PostgreSQL runs it again from its first read),
        so it decides only on what it reads through `writes.conn`."""
        done: list[_Writes] = []

        async def unit(conn: Connection) -> T:
            writes = _Writes(conn, actor, self.now())
            result = await work(writes)
            # The webhook outbox, in this same transaction (licensing/webhook_events.py).
            await webhook_events.emit_changes(
                conn, zip(writes.changes, writes.facts, strict=True), writes.now
            )
            await change_rows.record(
                conn, [(c.license_id, c.kind) for c in writes.changes], writes.now
            )
            if actor.kind is not ActorKind.MODULE:  # phone-home binds are in the attempt log
                await self.audit.append_all(
                    conn, at=writes.now, actor=actor,
                    entries=[
                        (f"license.{c.kind}", target, detail)
                        for c, (target, detail) in zip(writes.changes, writes.audit, strict=True)
                    ],
                )  # fmt: skip
            done[:] = [writes]
            return result

        result = await self.db.transaction(unit)
        self.feed.announce(done[0].changes)
        return result

    # -- products -------------------------------------------------------------------------

    async def create_product(self, spec: ProductSpec, *, actor: Actor = SYSTEM) -> Product:
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
            "reissue_cooldown_hours": spec.reissue_cooldown_hours,
            "created_at": now,
            "updated_at": now,
        }

        async def work(writes: _Writes) -> int:
            # The UNIQUE constraint is case-sensitive; a mixed-case code from before codes
            # were folded must still block its lower-case twin.
            if await product_rows.product_by_code(writes.conn, spec.code) is not None:
                raise Conflict(f"a product with code {spec.code!r} exists")
            writes.changed(ChangeKind.PRODUCT)
            return await product_rows.insert_product(writes.conn, row)

        try:
            row["id"] = await self.write(actor, work)
        except UniqueViolation:
            raise Conflict(
                f"a product with code {spec.code!r} or key prefix {spec.prefix()!r} exists"
            ) from None
        return product_from_row(row)

    async def update_product(
        self, code: str, changes: ProductChanges, *, actor: Actor = SYSTEM
    ) -> Product:
        """Change a product's settings; only what differs is written, and audited with its
        before and after values (a WHMCS secret as set / not set, never its value). Every
        cached license of every product is dropped: the next check sees the change."""
        product = await self.product(code)
        values = changes.model_dump(
            exclude_none=True, exclude={"unlimited_reissues", "clear_whmcs_secret"}
        )
        if "features" in values:
            values["features"] = list(values["features"])
        if changes.unlimited_reissues:
            values["max_reissues"] = None
        if changes.clear_whmcs_secret:
            values["whmcs_secret"] = None
        if not values:
            raise ValueError("nothing to change")

        async def work(writes: _Writes) -> None:
            row = await product_rows.product_by(writes.conn, "id", product.id)
            if row is None:
                raise NotFound(f"no product with code {code!r}")
            before = product_from_row(row)
            current = {name: getattr(before, name) for name in _PRODUCT_AUDITED}
            current["features"] = list(before.features)
            new = dict(values)
            secret = new.pop("whmcs_secret", _KEEP)
            changed = {name: value for name, value in new.items() if current[name] != value}
            audit_before = {name: current[name] for name in changed}
            audit_after = dict(changed)
            if secret is not _KEEP:
                # A new secret is a change even if equal: it is never decrypted to compare.
                if secret is not None or before.has_whmcs_secret:
                    audit_before["whmcs_secret"] = "set" if before.has_whmcs_secret else "not set"
                    audit_after["whmcs_secret"] = "not set" if secret is None else "set (new)"
                    changed["whmcs_secret"] = (
                        None
                        if secret is None
                        else self.cipher.encrypt("products", "whmcs_secret", secret)
                    )
            if not changed:
                return
            if "features" in changed:
                changed["features"] = json.dumps(changed["features"])
            changed["updated_at"] = writes.now
            await product_rows.update_product(writes.conn, product.id, changed)
            writes.changed(
                ChangeKind.PRODUCT, target=f"product:{before.code}",
                detail={"before": audit_before, "after": audit_after},
            )  # fmt: skip

        await self.write(actor, work)
        return await self.product(code)

    async def products(self) -> list[Product]:
        async with self.db.read() as conn:
            return [product_from_row(row) for row in await product_rows.all_products(conn)]

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

    async def issue(self, spec: LicenseSpec, *, actor: Actor = SYSTEM) -> tuple[License, str]:
        """Create a license and return it with its key; the key is shown this once."""
        [(license_id, key)] = await self._issue(spec, 1, actor, bulk=False)
        return await self.license_by_id(license_id), key

    async def issue_many(
        self, spec: LicenseSpec, count: int, *, actor: Actor = SYSTEM
    ) -> list[tuple[int, str]]:
        """`count` licenses alike (1..MAX_BULK_ISSUE) in one transaction: all or none. Returns
        (id, key) of each; the keys exist nowhere else in plain text (shown this once). The
        audit log gets one `license.bulk_issue` row naming them, besides each issue."""
        if not 1 <= count <= MAX_BULK_ISSUE:
            raise ValueError(f"count: must be between 1 and {MAX_BULK_ISSUE}")
        return await self._issue(spec, count, actor, bulk=True)

    async def _issue(
        self, spec: LicenseSpec, count: int, actor: Actor, *, bulk: bool
    ) -> list[tuple[int, str]]:
        product = await self.product(spec.product)
        now = self.now()
        expires_at = None if spec.expires is None else end_of_day_utc(spec.expires)
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires: the expiry date must not be in the past")
        rules = spec.rules()

        async def work(writes: _Writes) -> list[tuple[int, str]]:
            conn = writes.conn
            signer = self.keyring.active  # read once: the keyring may change while we wait
            issued = []
            rows = []
            # All in a few statements, not three per license (up to MAX_BULK_ISSUE of them in
            # this transaction, which holds the write lock every check's attempt waits for).
            for license_id in await self._free_license_ids(conn, count):
                key = make_license_key(signer, product.key_prefix, license_id)
                rows.append(
                    NewLicense(
                        id=license_id,
                        product_id=product.id,
                        key_hash=self.hasher.hash(KEY_HASH_PURPOSE, key),
                        key_encrypted=self.cipher.encrypt("licenses", "key_encrypted", key),
                        key_kind=KeyKind.SIGNED.value,
                        # So that `run.py retire` knows this key keeps its signer published.
                        signing_kid=signer.kid,
                        status=Status.PENDING.value,
                        licensee_name=spec.licensee,
                        licensee_company=spec.company,
                        expires_at=expires_at,
                        seats=spec.seats,
                        notes=spec.notes,
                        created_at=now,
                        updated_at=now,
                        **self._sealed_email(license_id, str(spec.email)),
                    )
                )
                writes.changed(ChangeKind.ISSUE, license_id)
                issued.append((license_id, key))
            await license_rows.insert_licenses(conn, rows)
            await license_rows.add_rules_of(
                conn,
                [(license_id, kind, value) for license_id, _ in issued for kind, value in rules],
            )
            if bulk:
                await self.audit.append(
                    conn, at=writes.now, actor=writes.actor, action="license.bulk_issue",
                    target=f"product:{product.code}",
                    detail={"count": count, "license_ids": [i for i, _ in issued]},
                )  # fmt: skip
            return issued

        return await self.write(actor, work)

    async def import_licenses(
        self, licenses: Sequence[ImportedLicense], *, actor: Actor = SYSTEM
    ) -> dict[bytes, str]:
        """Insert the licenses whose key is new, in one transaction; for those whose key is
        not: the code of the product that has it (they are left untouched)."""
        hashes = [imported.row.key_hash for imported in licenses]

        async def work(writes: _Writes) -> dict[bytes, str]:
            conn = writes.conn
            # Checked inside the transaction, with imports serialised (one lock for all of
            # them; they are rare): nothing can insert the same key in between.
            await conn.lock_name("license-import")
            owners = await import_rows.product_codes_by_key_hash(conn, hashes)
            bindings: list[tuple[int, str, str, str, bool, int, int]] = []
            new = [imported for imported in licenses if imported.row.key_hash not in owners]
            rows = []
            # A few statements for the batch (500 by default), not two per license.
            for imported, license_id in zip(
                new, await self._free_license_ids(conn, len(new)), strict=True
            ):
                row = imported.row
                rows.append(
                    replace(
                        row,
                        id=license_id,
                        created_at=row.created_at or writes.now,
                        updated_at=row.updated_at or writes.now,
                        **self._sealed_email(license_id, imported.email),
                    )
                )
                bindings += (
                    (
                        license_id,
                        kind,
                        value,
                        raw,
                        False,
                        writes.now,
                        writes.now if seen is None else seen,
                    )
                    for kind, value, raw, seen in imported.bindings
                )
                writes.changed(ChangeKind.IMPORT, license_id)
            await license_rows.insert_licenses(conn, rows)
            await import_rows.insert_bindings(conn, bindings)
            return owners

        return await self.write(actor, work)

    @staticmethod
    async def _free_license_ids(conn: Connection, count: int) -> list[int]:
        """`count` distinct ids no license has, drawn at random, so that a key does not reveal
        how many licenses a vendor has sold: one read for all of them (and another for the
        rare ones already taken, drawn again)."""
        chosen: list[int] = []
        while len(chosen) < count:
            candidates = {secrets.randbelow(MAX_LICENSE_ID) + 1 for _ in range(count - len(chosen))}
            candidates.difference_update(chosen)
            taken = await license_rows.taken_ids(conn, candidates)
            chosen += (candidate for candidate in candidates if candidate not in taken)
        return chosen

    # -- licensee e-mails (ASVS 4.0.3 V6.1.1, V6.2.1) ---------------------------------------

    def email_index(self, address: str) -> bytes | None:
        """The blind index of an address (None for no address): what an exact search by
        e-mail looks up, with the address normalised as when it was stored."""
        normal = normalise_email(address)
        return self.hasher.blind_index(EMAIL_INDEX_PURPOSE, normal) if normal else None

    def seal_email(self, license_id: int, address: str) -> tuple[bytes, bytes | None]:
        """The address encrypted for license `license_id`'s row, and its blind index."""
        encrypted = self.cipher.encrypt("licenses", EMAIL_COLUMN, address, row=license_id)
        return encrypted, self.email_index(address)

    def _sealed_email(self, license_id: int, address: str) -> dict[str, bytes | None]:
        encrypted, index = self.seal_email(license_id, address)
        return {"licensee_email_encrypted": encrypted, "licensee_email_index": index}

    def open_email(self, row: dict) -> str:
        """A license row's e-mail: decrypted, or the plain column of a row not sealed yet."""
        if row.get("licensee_email_encrypted") is None:
            return row.get("licensee_email") or ""
        return self.cipher.decrypt("licenses", EMAIL_COLUMN, row["licensee_email_encrypted"],
                                   row=row["id"])  # fmt: skip

    async def seal_legacy_emails(self, batch: int = 2000) -> int:
        """Encrypt the e-mails still stored in plain text (rows written before migration 12, or
        by an older server during a rolling upgrade, or copied from such a store), a batch per
        transaction so that verification waits for one short write at a time. Idempotent;
        returns how many rows it sealed. Not audited: no value changes, only its storage."""
        sealed = 0
        while True:
            async with self.db.write() as conn:
                rows = await license_rows.unsealed_emails(conn, batch)
                await license_rows.seal_emails(
                    conn,
                    [(*self.seal_email(row["id"], row["licensee_email"]), row["id"])
                     for row in rows],
                )  # fmt: skip
            sealed += len(rows)
            if len(rows) < batch:
                return sealed

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

    async def count_by_status(self) -> dict[Status, int]:
        async with self.db.read() as conn:
            counts = await license_rows.count_by_status(conn)
        return {status: counts.get(status.value, 0) for status in Status}

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

    async def load(self, conn: Connection, license_id: int) -> License | None:
        """Load inside the caller's write transaction, the license's row locked until it ends
        (read-check-write without a race, on SQLite and across PostgreSQL instances)."""
        row = await license_rows.lock_license(conn, license_id)
        return None if row is None else await self._load(conn, row)

    async def _load(self, conn: Connection, row: dict) -> License:
        product = self._products.get(row["product_id"])
        if product is None:
            flushes = self._product_flushes
            product = product_from_row(await product_rows.product_by(conn, "id", row["product_id"]))
            if flushes == self._product_flushes:  # else it may predate a product change
                self._products.put(product.id, product)
        rules = await license_rows.rules_of(conn, row["id"])
        bindings = await license_rows.bindings_of(conn, row["id"])
        row = {**row, "licensee_email": self.open_email(row)}
        return license_from_rows(row, product, rules, bindings)

    async def apply(
        self,
        license_id: int,
        action: lifecycle.Action,
        *,
        actor: Actor = SYSTEM,
        **options: object,
    ) -> License:
        """Run one lifecycle action; the read-check-write happens inside one transaction."""

        async def work(writes: _Writes) -> License:
            license = await self.load(writes.conn, license_id)
            if license is None:
                raise NotFound(f"no license with id {license_id}")
            settings = dict(options)
            if action is lifecycle.Action.REISSUE:
                settings.setdefault("max_reissues", license.product.max_reissues)
            return await self._transition(writes, license, action, **settings)

        return await self.write(actor, work)

    async def expire_if_lapsed(self, license_id: int, *, actor: Actor = SYSTEM) -> bool:
        """Persist the expiry of a license whose date has passed (the expiry sweep): True
        when this call expired it. Decided on the row locked in the transaction, so a renewal
        that got in first is kept, and of several instances sweeping at once one expires it
        (license.expired is written once)."""

        async def work(writes: _Writes) -> bool:
            license = await self.load(writes.conn, license_id)
            if license is None or license.status not in (Status.ACTIVE, Status.PENDING):
                return False
            if license.expires_at is None or license.expires_at > writes.now:
                return False
            await self._transition(writes, license, lifecycle.Action.EXPIRE)
            return True

        return await self.write(actor, work)

    async def first_use(
        self, license_id: int, decide: Decide, *, actor: Actor
    ) -> tuple[License | None, Verdict]:
        """Bind and/or activate on a first check, deciding again on the license as re-read
        inside the write transaction, so two simultaneous first checks cannot both take the
        last seat. A second free trial on a domain another trial of the product holds is
        suspended instead (DESIGN.md, as the WHMCS addon does). The license is read once; the
        result is built in memory."""

        async def work(writes: _Writes) -> tuple[License | None, Verdict]:
            conn = writes.conn
            fresh = await self.load(conn, license_id)
            if fresh is None:
                return None, refused("unknown_key")
            plan = await decide(fresh)
            if plan.verdict.answer is not Answer.ACTIVE:
                return fresh, plan.verdict
            domains = [b.value for b in plan.bindings if b.kind == "domain"]
            if domains and fresh.product.free_trial:
                # Two trials of the product binding the domain at once: one waits here.
                await conn.lock_name(f"trial:{fresh.product.id}:{domains[0]}")
                if await license_rows.other_holders_of_domain(
                    conn, fresh.product.id, domains[0], fresh.id
                ):
                    suspended = await self._transition(writes, fresh, lifecycle.Action.SUSPEND)
                    return suspended, Verdict(Answer.SUSPENDED, "trial_already_used")
            license = await self._bind(writes, fresh, plan.bindings)
            if license.status is Status.PENDING:
                license = await self._transition(writes, license, lifecycle.Action.ACTIVATE)
            return license, plan.verdict

        return await self.write(actor, work)

    async def _bind(
        self, writes: _Writes, license: License, bindings: Sequence[NewBinding]
    ) -> License:
        held = {(b.kind, b.value) for b in license.bindings}
        added = []
        for new in bindings:
            await license_rows.upsert_binding(
                writes.conn,
                license.id,
                kind=new.kind,
                value=new.value,
                raw_value=new.raw_value,
                is_dev=new.is_dev,
                now=writes.now,
            )
            if (new.kind, new.value) not in held:
                held.add((new.kind, new.value))
                added.append(
                    Binding(new.kind, new.value, new.raw_value, new.is_dev, writes.now, writes.now)
                )
        if not added:
            return license
        writes.changed(
            ChangeKind.BIND, license.id,
            facts={"domains": [b.value for b in added if b.kind == "domain"]},
        )  # fmt: skip
        return replace(license, bindings=license.bindings + tuple(added))

    async def _transition(
        self, writes: _Writes, license: License, action: lifecycle.Action, **options: object
    ) -> License:
        """Apply one lifecycle rule to `license` (loaded in this transaction); the result is
        what a reload would give, built in memory."""
        state = lifecycle.LicenseState(
            license.status, license.expires_at, license.reissue_count, bool(license.bindings)
        )
        change = lifecycle.transition(state, action, now=writes.now, **options)
        if change.clear_bindings:
            await license_rows.clear_bindings(writes.conn, license.id)
        reissued = action is lifecycle.Action.REISSUE
        await license_rows.update_state(
            writes.conn,
            license.id,
            status=change.status.value,
            expires_at=change.expires_at,
            reissue_count=change.reissue_count,
            now=writes.now,
            reissued_at=writes.now if reissued else None,
        )
        before = {"status": license.status.value, "expires_at": license.expires_at,
                  "reissue_count": license.reissue_count}  # fmt: skip
        after = {"status": change.status.value, "expires_at": change.expires_at,
                 "reissue_count": change.reissue_count}  # fmt: skip
        if change.clear_bindings:
            before["bindings"] = [f"{b.kind} {b.value}" for b in license.bindings]
            after["bindings"] = []
        writes.changed(
            ChangeKind(action.value), license.id,
            detail={"before": _differing(before, after), "after": _differing(after, before)},
        )  # fmt: skip
        return replace(
            license,
            status=change.status,
            expires_at=change.expires_at,
            reissue_count=change.reissue_count,
            revision=license.revision + 1,  # update_state bumps it
            updated_at=writes.now,
            bindings=() if change.clear_bindings else license.bindings,
            last_reissued_at=writes.now if reissued else license.last_reissued_at,
        )

    # -- staff's changes to an issued license (the admin; the vendor API later) -------------

    async def renew(
        self, license_id: int, expires_at: int | None, *, actor: Actor = SYSTEM
    ) -> License:
        """A new expiry (None: never); an expired license comes back (lifecycle RENEW)."""
        return await self.apply(license_id, lifecycle.Action.RENEW, actor=actor,
                                new_expiry=expires_at)  # fmt: skip

    async def edit_terms(
        self,
        license_id: int,
        terms: LicenseTerms | Callable[[License], LicenseTerms],
        *,
        actor: Actor = SYSTEM,
    ) -> License:
        """Replace the licensee, seats (None: the product's), notes and allow-rules. Bindings
        are kept: a bound site that a new rule no longer allows is refused at its next check.
        `terms` may be a function of the license as locked in the transaction (a partial
        change, the vendor API's PATCH: merged with what is there, no lost update); what it
        raises (a ValidationError) leaves nothing written."""

        async def work(writes: _Writes) -> License:
            row = await license_rows.lock_license(writes.conn, license_id)
            if row is None:
                raise NotFound(f"no license with id {license_id}")
            license = await self._load(writes.conn, row)
            new_terms = terms(license) if callable(terms) else terms
            seats = new_terms.seats
            if seats == license.seats and row["seats"] is None:
                seats = None  # unchanged: still follows the product's seats
            rules = [(r.kind, r.value) for r in license.rules]
            before = _terms_of(
                license.licensee_name, license.licensee_company, row["seats"], license.notes, rules
            )
            after = _terms_of(new_terms.licensee, new_terms.company, seats, new_terms.notes,
                              new_terms.rules())  # fmt: skip
            if before == after:
                return license
            await license_rows.update_terms(
                writes.conn, license_id, licensee_name=new_terms.licensee,
                licensee_company=new_terms.company, seats=seats, notes=new_terms.notes,
                now=writes.now,
            )  # fmt: skip
            if before["rules"] != after["rules"]:
                await license_rows.replace_rules(writes.conn, license_id, new_terms.rules())
            writes.changed(
                ChangeKind.EDIT, license_id,
                detail={"before": _differing(before, after), "after": _differing(after, before)},
            )  # fmt: skip
            return license

        await self.write(actor, work)
        return await self.license_by_id(license_id)

    async def reset_reissues(self, license_id: int, *, actor: Actor = SYSTEM) -> License:
        """The reissue count back to 0: the customer may reissue again up to the limit."""

        async def work(writes: _Writes) -> None:
            license = await self._locked(writes.conn, license_id)
            if license.reissue_count == 0:
                return
            await license_rows.update_state(
                writes.conn, license_id, status=license.status.value,
                expires_at=license.expires_at, reissue_count=0, now=writes.now,
            )  # fmt: skip
            writes.changed(
                ChangeKind.RESET_REISSUES, license_id,
                detail={"before": {"reissue_count": license.reissue_count},
                        "after": {"reissue_count": 0}},
            )  # fmt: skip

        await self.write(actor, work)
        return await self.license_by_id(license_id)

    async def release_binding(
        self,
        license_id: int,
        kind: str,
        value: str,
        *,
        actor: Actor = SYSTEM,
        within: Within | None = None,
    ) -> License:
        """Free one binding (the customer moved that site): its seat is free for the next
        check. NotFound when the license holds no such binding. `within(conn)` runs first in
        the same transaction (the customer page spends its confirmation link there)."""

        async def work(writes: _Writes) -> None:
            license = await self._locked(writes.conn, license_id)
            if within is not None:
                await within(writes.conn)
            binding = next(
                (b for b in license.bindings if (b.kind, b.value) == (kind, value)), None
            )
            if binding is None or not await license_rows.delete_binding(
                writes.conn, license_id, kind, value, writes.now
            ):
                raise NotFound(f"license {license_id} holds no {kind} binding {value!r}")
            writes.changed(
                ChangeKind.RELEASE, license_id,
                detail={"before": {"binding": f"{kind} {value}",
                                   "bound_at": binding.created_at},
                        "after": {"binding": None}},
                facts={"kind": kind, "value": value},
            )  # fmt: skip

        await self.write(actor, work)
        return await self.license_by_id(license_id)

    async def customer_reissue(
        self, license_id: int, *, actor: Actor, within: Within | None = None
    ) -> License:
        """A reissue asked for by the licensee (the customer page): within the product's
        `max_reissues` and, since the last reissue, its `reissue_cooldown_hours`; refused with
        `lifecycle.ReissueLimitReached` / `ReissueCooldown` (which says until when).
        Staff reissues (`apply`) keep the limit but not the cooldown: staff decide by hand.
        `within(conn)` runs first in the same transaction."""

        async def work(writes: _Writes) -> License:
            license = await self._locked(writes.conn, license_id)
            if within is not None:
                await within(writes.conn)
            return await self._transition(
                writes, license, lifecycle.Action.REISSUE,
                max_reissues=license.product.max_reissues,
                reissue_not_before=reissue_available_at(license),
            )  # fmt: skip

        return await self.write(actor, work)

    async def _locked(self, conn: Connection, license_id: int) -> License:
        license = await self.load(conn, license_id)
        if license is None:
            raise NotFound(f"no license with id {license_id}")
        return license


def reissue_available_at(license: License) -> int | None:
    """When the cooldown after the license's last reissue ends (UTC seconds), None if none."""
    hours = license.product.reissue_cooldown_hours
    if not hours or license.last_reissued_at is None:
        return None
    return license.last_reissued_at + hours * 3600


def _terms_of(
    licensee: str, company: str, seats: int | None, notes: str, rules: Sequence[tuple[str, str]]
) -> dict:
    return {"licensee": licensee, "company": company, "seats": seats, "notes": notes,
            "rules": sorted(f"{kind} {value}" for kind, value in rules)}  # fmt: skip


def _differing(values: dict, other: dict) -> dict:
    """The entries of `values` that `other` does not share (an audit row's before or after)."""
    return {name: value for name, value in values.items() if other.get(name) != value}

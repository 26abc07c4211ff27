"""Import the licenses of a WHMCS Licensing Addon export (``mod_licensing``) into a product.

Vendors moving off WHMCS bring their customers' keys along: modules in the field keep sending
them, so every row becomes a *legacy* key of the chosen product, stored like any other key
(keyed hash + encrypted copy), together with the domains, IPs and directories WHMCS had bound,
so no installation has to activate again.

Shaped for large files and for being run again:

* rows stream from :func:`read_export`; each is validated completely (bindings normalised,
  duplicates within the file, key already owned by another product) before anything of it is
  written, so a row is imported whole or reported as a :class:`BadRow`, never half;
* valid rows are written in batches, one transaction each, so a crash loses at most the batch
  in flight;
* a key that is already in the database is left untouched and counted as already present,
  so a re-run picks up where a crashed run stopped and a repeated run changes nothing.

The export is read synchronously between batches: this is meant for the ``run.py
import-whmcs`` command, not for a request handler of the running server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from license_server.db import imports as import_rows
from license_server.db.licenses import NewLicense
from license_server.licensing.actors import SYSTEM, Actor
from license_server.licensing.domains import (
    InvalidDirectory,
    InvalidHost,
    normalise_directory,
    normalise_domain,
    normalise_ip,
)
from license_server.licensing.license_keys import looks_signed
from license_server.licensing.models import KeyKind, Product, Status
from license_server.licensing.service import ImportedLicense, LicenseService
from license_server.licensing.whmcs_export import BadRow, ExportRow, read_export

__all__ = ["DEFAULT_BATCH_SIZE", "ImportReport", "ProgressCallback", "import_export"]

DEFAULT_BATCH_SIZE = 500

# on_progress(bytes_done, total_bytes, rows_read)
ProgressCallback = Callable[[int, int, int], None]

_STATUS = {
    "Active": Status.ACTIVE,
    "Reissued": Status.PENDING,  # waits for its next check-in to bind, as in WHMCS
    "Suspended": Status.SUSPENDED,
    "Expired": Status.EXPIRED,
}


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do)."""

    imported: int = 0
    already_present: int = 0
    bad: list[BadRow] = field(default_factory=list)  # in file order
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class _Binding:
    kind: str
    value: str
    raw_value: str


@dataclass(frozen=True, slots=True)
class _Planned:
    """A fully validated row, ready to be written."""

    number: int  # position of the row in the file
    row: ExportRow
    key_hash: bytes
    status: Status
    bindings: tuple[_Binding, ...]
    seats: int | None
    last_access_at: int | None


class _BadValue(ValueError):
    """A binding value that does not normalise; the message becomes BadRow.reason."""


async def import_export(
    service: LicenseService,
    path: str | Path,
    product_code: str,
    *,
    dry_run: bool = False,
    on_progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actor: Actor = SYSTEM,
) -> ImportReport:
    """Import the export at ``path`` into the product ``product_code``.

    Raises NotFound for an unknown product and ExportFormatError (before writing anything)
    when the file is not an export.  With ``dry_run`` the database is only read.
    """
    product = await service.product(product_code)
    report = ImportReport(dry_run=dry_run)
    # (row number, bad row): the database check finds some a batch late, the report is in
    # file order (the line alone is not enough: mysqldump puts a thousand rows on one line).
    bad: list[tuple[int, BadRow]] = []
    first_line: dict[bytes, int] = {}  # key hash -> line of its first row in this file
    batch: list[_Planned] = []
    rows_read = 0

    def progress(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(done, total, rows_read)

    async def settle(batch: list[_Planned]) -> None:
        owners = await _write_batch(service, product, batch, dry_run=dry_run, actor=actor)
        # Counted only once committed: a failed batch must not show up in a report.
        for planned in batch:
            owner = owners.get(planned.key_hash)
            if owner is None:
                report.imported += 1
            elif owner == product.code:
                report.already_present += 1  # an earlier run imported it: left as it is
            else:
                reason = f"key already belongs to product {owner}"
                bad.append((planned.number, BadRow(planned.row.line, reason)))

    for rows_read, item in enumerate(read_export(path, progress), 1):
        planned = _plan(service, product, rows_read, item, first_line)
        if isinstance(planned, BadRow):
            bad.append((rows_read, planned))
            continue
        batch.append(planned)
        if len(batch) >= batch_size:
            await settle(batch)
            batch = []
    if batch:
        await settle(batch)
    report.bad = [row for _, row in sorted(bad, key=lambda numbered: numbered[0])]
    return report


def _plan(
    service: LicenseService,
    product: Product,
    number: int,
    item: ExportRow | BadRow,
    first_line: dict[bytes, int],
) -> _Planned | BadRow:
    """Everything that can be checked without the database, in one place."""
    if isinstance(item, BadRow):
        return item
    row = item
    if looks_signed(row.license_key):
        # The server would parse it as a signed key and never look it up as a legacy one.
        return BadRow(row.line, "key looks like a signed key of this server")
    # lookup_for gives exactly the hash the verify endpoints will compute for this key.
    key_hash = service.lookup_for(row.license_key).key_hash
    if (first := first_line.get(key_hash)) is not None:
        return BadRow(row.line, f"duplicate key (first on line {first})")
    # WHMCS clears the bindings on reissue; whatever is left in those columns is not in use.
    try:
        bindings = () if row.status == "Reissued" else _bindings(row)
    except _BadValue as exc:
        return BadRow(row.line, str(exc))
    # Only usable rows claim their key, as for rows the reader already refused (it cannot
    # tell us their key): a later, correct copy of a broken row is imported.
    first_line[key_hash] = row.line
    status = _STATUS[row.status]
    if status is Status.ACTIVE and not bindings:
        status = Status.PENDING  # nothing bound yet: the first check binds, as for a new key
    domains = sum(1 for binding in bindings if binding.kind == "domain")
    last_access = row.last_access
    return _Planned(
        number=number,
        row=row,
        key_hash=key_hash,
        status=status,
        bindings=bindings,
        # Keep every binding WHMCS allowed usable; otherwise the product's default applies.
        seats=domains if domains > product.seats else None,
        last_access_at=None
        if last_access is None
        else int(last_access.replace(tzinfo=UTC).timestamp()),
    )


_KINDS = (
    ("domain", "validdomain", normalise_domain),
    ("ip", "validip", normalise_ip),
    ("directory", "validdirectory", normalise_directory),
)


def _bindings(row: ExportRow) -> tuple[_Binding, ...]:
    """One binding per distinct normalised value; raises _BadValue for the first bad one."""
    columns = {"domain": row.valid_domains, "ip": row.valid_ips, "directory": row.valid_directories}
    bindings: list[_Binding] = []
    for kind, column, normalise in _KINDS:
        raw_by_value: dict[str, str] = {}
        for raw in columns[kind]:
            try:
                value = normalise(raw)
            except (InvalidHost, InvalidDirectory) as exc:
                raise _BadValue(f"{column}: {exc}") from None
            kept = raw_by_value.get(value)
            # WHMCS stores "d,www.d"; the compatible endpoint derives that pair from the raw
            # value again, so keep the spelling without "www." when the row has one.
            if kept is None or (kind == "domain" and _has_www(kept) and not _has_www(raw)):
                raw_by_value[value] = raw
        bindings += (_Binding(kind, value, raw) for value, raw in raw_by_value.items())
    return tuple(bindings)


def _has_www(raw: str) -> bool:
    return raw.lower().startswith("www.")


async def _write_batch(
    service: LicenseService,
    product: Product,
    batch: list[_Planned],
    *,
    dry_run: bool,
    actor: Actor,
) -> dict[bytes, str]:
    """Insert the rows whose key is new; return the product codes of the keys that are not."""
    if dry_run:
        hashes = [planned.key_hash for planned in batch]
        async with service.db.read() as conn:
            return await import_rows.product_codes_by_key_hash(conn, hashes)
    # Encrypted before the write transaction, so the server waits as little as possible.
    licenses = [
        ImportedLicense(
            _license_row(
                planned,
                product,
                service.cipher.encrypt("licenses", "key_encrypted", planned.row.license_key),
            ),
            # An imported binding keeps when it was last seen in the old system.
            tuple((b.kind, b.value, b.raw_value, planned.last_access_at) for b in planned.bindings),
            email="",  # mod_licensing does not have it; it lives in WHMCS's clients
        )
        for planned in batch
    ]
    return await service.import_licenses(licenses, actor=actor)


def _license_row(planned: _Planned, product: Product, key_encrypted: bytes) -> NewLicense:
    row = planned.row
    return NewLicense(
        product_id=product.id,
        key_hash=planned.key_hash,
        key_encrypted=key_encrypted,
        key_kind=KeyKind.LEGACY.value,
        status=planned.status.value,
        licensee_name=f"WHMCS service #{row.service_id}",
        expires_at=None,  # WHMCS keeps the due date on the service, not in this table
        seats=planned.seats,
        reissue_count=row.reissues,
        notes=f"Imported from WHMCS mod_licensing row {row.whmcs_id}.",
        whmcs_service_id=row.service_id,
        last_access_at=planned.last_access_at,
    )

"""Licensee e-mails encrypted at rest with a blind index (migration 12), and keys and e-mails
masked in application logs (issue #12; ASVS 4.0.3 V6.1.1, V6.2.1, V7.1.1, V8.3.4)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from license_server import log_masking
from license_server.appkeys import RUNTIME
from license_server.crypto.fields import DecryptionError
from license_server.db.licenses import LicenseFilter, license_page
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec
from license_server.runtime import open_runtime
from license_server.web.access_log import BatchedLineWriter, MaskedAccessLogger
from tests.conftest import PRODUCT
from tests.test_admin_licenses import issue, staff_session

SECRET_MAIL = "Billing.Unique-7431@Smith-Sons.example"


async def _issue_with(runtime, email: str, licensee: str = "Smith & Sons"):
    try:
        await runtime.licenses.create_product(PRODUCT)
    except Exception:
        pass  # made by an earlier call
    return await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee=licensee, email=email), actor=CLI
    )


async def _raw_row(runtime, license_id: int) -> dict:
    async with runtime.db.read() as conn:
        return await conn.fetch_one("SELECT * FROM licenses WHERE id = ?", (license_id,))


def _contains(value: object, needle: str) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return needle.encode() in bytes(value) or needle.lower().encode() in bytes(value)
    return isinstance(value, str) and needle.lower() in value.lower()


async def test_the_email_is_not_in_the_database_in_plain_text(runtime, settings, store):
    license, _ = await _issue_with(runtime, SECRET_MAIL)
    row = await _raw_row(runtime, license.id)
    assert row["licensee_email"] == ""
    assert not any(_contains(value, "Unique-7431") for value in row.values())
    # As pydantic's EmailStr keeps it: the domain lower-cased, the local part as typed.
    stored = "Billing.Unique-7431@smith-sons.example"
    assert (await runtime.licenses.license_by_id(license.id)).licensee_email == stored
    if store == "sqlite":
        # The raw file and its WAL, as a copy of the disk would show them.
        path = Path(settings.database_location())
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert b"Unique-7431" not in raw and b"unique-7431" not in raw
        assert b"Smith & Sons" in raw  # names may stay searchable: the test reads the file


async def test_the_ciphertext_is_bound_to_its_row(runtime):
    first, _ = await _issue_with(runtime, "first@example.org")
    second, _ = await _issue_with(runtime, "second@example.org")
    sealed = (await _raw_row(runtime, first.id))["licensee_email_encrypted"]
    async with runtime.db.write() as conn:
        await conn.execute(
            "UPDATE licenses SET licensee_email_encrypted = ? WHERE id = ?", (sealed, second.id)
        )
    with pytest.raises(DecryptionError):
        await runtime.licenses.license_by_id(second.id)  # copied onto another license: refused


async def test_the_blind_index_finds_the_exact_address_only(runtime):
    license, _ = await _issue_with(runtime, SECRET_MAIL)
    await _issue_with(runtime, "someone.else@smith-sons.example")
    service = runtime.licenses

    async def found(text: str) -> list[int]:
        async with runtime.db.read() as conn:
            rows = await license_page(
                conn, before_id=None, limit=10,
                where=LicenseFilter(email_index=service.email_index(text) or b""),
            )  # fmt: skip
        return [row["id"] for row in rows]

    # Normalised as stored: case and surrounding space do not matter.
    assert await found(SECRET_MAIL) == [license.id]
    assert await found("  billing.unique-7431@smith-sons.EXAMPLE ") == [license.id]
    # Anything but the exact address finds nothing: no prefix, no domain, no near miss.
    near_misses = (
        "billing.unique-7431",
        "smith-sons.example",
        "@smith-sons.example",
        "billing.unique-7431@smith-sons.exampl",
        "illing.unique-7431@smith-sons.example",
    )
    for text in near_misses:
        assert await found(text) == [], text
    index = (await _raw_row(runtime, license.id))["licensee_email_index"]
    assert len(bytes(index)) == 32 and bytes(index) != service.hasher.hash("x", SECRET_MAIL)


async def test_rows_from_before_migration_9_are_sealed_at_start_up(settings):
    """A row as an older server (or a copy of its store) left it: the address in the plain
    column, nothing sealed. It reads through the fallback, and the next start seals it."""
    async with open_runtime(settings) as runtime:
        license, _ = await _issue_with(runtime, "placeholder@example.org")
        other, _ = await _issue_with(runtime, "kept@example.org")
        async with runtime.db.write() as conn:
            await conn.execute(
                "UPDATE licenses SET licensee_email = ?, licensee_email_encrypted = NULL, "
                "licensee_email_index = NULL WHERE id = ?",
                ("Old.Customer@Legacy.example", license.id),
            )
        assert (await runtime.licenses.license_by_id(license.id)).licensee_email == (
            "Old.Customer@Legacy.example"
        )
    async with open_runtime(settings) as runtime:  # start-up seals what is left
        row = await _raw_row(runtime, license.id)
        assert row["licensee_email"] == "" and row["licensee_email_encrypted"] is not None
        assert (await runtime.licenses.license_by_id(license.id)).licensee_email == (
            "Old.Customer@Legacy.example"
        )
        assert (await runtime.licenses.license_by_id(other.id)).licensee_email == (
            "kept@example.org"
        )
        async with runtime.db.read() as conn:
            rows = await license_page(
                conn, before_id=None, limit=5,
                where=LicenseFilter(email_index=runtime.licenses.email_index("old.customer@legacy.example")),
            )  # fmt: skip
        assert [r["id"] for r in rows] == [license.id]
        assert await runtime.licenses.seal_legacy_emails() == 0  # nothing twice


async def test_every_reader_of_the_email_still_gets_it(client):
    """The admin's list and license page, the WHMCS answer's `email` read the decrypted value."""
    license_id, key = await issue(client)
    browser = await staff_session(client, "read_only")
    _, page = await browser.get("/admin/licenses")
    assert "ops@smith.example" in page
    _, page = await browser.get(f"/admin/licenses/{license_id}")
    assert "ops@smith.example" in page
    runtime = client.app[RUNTIME]
    assert (await runtime.licenses.license_by_key(key)).licensee_email == "ops@smith.example"


# -- logs ---------------------------------------------------------------------------------


KEY = "MYMOD-" + "0123456789ABCDEFGHJKMNPQRSTVWXYZ" * 3 + "0123456789ABCDEFGH"


@pytest.fixture
def captured_logs():
    """The root logger's output as run.py sets it up: a handler with the PII filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    log_masking.install()
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def test_masking_functions():
    assert log_masking.mask_key(KEY) == "MYMOD-...EFGH"
    assert log_masking.mask_key("short-legacy") == "..."
    assert log_masking.mask_key("LEGACYKEY0123456789") == "...6789"
    assert log_masking.mask_email("ops@smith.example") == "o...@smith.example"
    text = f"key={KEY} mail=ops@smith.example enc=ops%40smith.example"
    masked = log_masking.mask_text(text)
    assert KEY not in masked and "ops@" not in masked and "ops%40" not in masked
    assert "MYMOD-...EFGH" in masked and "o...@smith.example" in masked


def test_log_records_are_masked_message_arguments_and_traceback(captured_logs):
    log = logging.getLogger("license_server.somewhere")
    log.warning("refused %s for %s", KEY, "ops@smith.example")
    try:
        raise ValueError(f"input_value='{SECRET_MAIL}' key {KEY}")
    except ValueError:
        log.exception("unhandled error on %s", "/admin/licenses")
    out = captured_logs.getvalue()
    assert KEY not in out and "ops@smith" not in out and "Unique-7431" not in out
    assert "MYMOD-...EFGH" in out and "o...@smith.example" in out and "Traceback" in out


async def test_an_admin_error_logs_no_email_or_key(client, captured_logs, monkeypatch):
    """A failure inside a search logs its traceback (with an error id), masked."""
    from license_server.staff.license_list import LicenseList

    async def broken(self, staff, query, before=None):
        raise RuntimeError(f"lookup failed for {query.q}")

    monkeypatch.setattr(LicenseList, "page", broken)
    browser = await staff_session(client, "read_only")
    response, page = await browser.get(f"/admin/licenses?q={SECRET_MAIL}")
    assert response.status == 500 and "Error id" in page
    out = captured_logs.getvalue()
    assert "lookup failed for B...@Smith-Sons.example" in out and "Unique-7431" not in out


def test_the_access_log_writes_no_query_string_and_masks_paths():
    stream = io.StringIO()
    access = MaskedAccessLogger(logging.getLogger("aiohttp.access"), "")
    access.writer = BatchedLineWriter(stream)

    class Request:
        remote = "203.0.113.77"
        method = "GET"

        def __init__(self, path: str) -> None:
            self.headers = {"User-Agent": "test"}
            self.path = path  # aiohttp's request.path: no query string

    class Response:
        status = 200
        body_length = 10

    access.log(Request("/admin/licenses"), Response(), 0.001)  # ?q=<key> is not in .path
    access.log(Request(f"/portal/{KEY}/ops@smith.example"), Response(), 0.001)
    out = stream.getvalue()
    assert KEY not in out and "ops@" not in out and "MYMOD-...EFGH" in out
    assert '"GET /admin/licenses"' in out

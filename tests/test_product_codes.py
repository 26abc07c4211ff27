"""Product codes are case-insensitive: stored lower-case, found and compared in any case."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from license_server.db import products as product_rows
from license_server.licensing.service import Conflict, NotFound
from license_server.licensing.specs import LicenseSpec, ProductSpec
from tests.verify_helpers import issue, product, reference_client


def test_new_codes_are_stored_lower_case():
    spec = ProductSpec(code="MyMod.Pro-2", name="My Module")
    assert spec.code == "mymod.pro-2"
    assert spec.prefix() == "MYMODPRO2"


@pytest.mark.parametrize("code", ["", " mymod", "my mod", "-mymod", "x" * 33, "mymöd", 7, None])
def test_malformed_codes_are_refused(code):
    with pytest.raises(ValidationError):
        ProductSpec(code=code, name="M")


async def test_lookups_ignore_case(runtime):
    created = await product(runtime, code="MyMod")
    assert created.code == "mymod"
    for spelling in ("mymod", "MYMOD", "MyMod"):
        assert (await runtime.licenses.product(spelling)).id == created.id
    license, _ = await issue(runtime, "MYMOD")
    assert license.product.code == "mymod"
    with pytest.raises(NotFound):
        await runtime.licenses.product("mymod2")


async def test_a_mixed_case_code_from_before_is_found_and_keeps_its_twin_out(runtime):
    # A row created before codes were folded keeps its spelling.
    legacy = await _insert_legacy_product(runtime, "OldMod")
    for spelling in ("OldMod", "oldmod", "OLDMOD"):
        assert (await runtime.licenses.product(spelling)).id == legacy
    license, _ = await runtime.licenses.issue(
        LicenseSpec(product="oldmod", licensee="A", email="a@example.org")
    )
    assert license.product.code == "OldMod"
    with pytest.raises(Conflict, match="'oldmod' exists"):
        await product(runtime, code="OLDMOD", key_prefix="OTHER")


async def test_verify_compares_the_requested_code_ignoring_case(client, app_runtime):
    await product(app_runtime, code="mymod")
    await _insert_legacy_product(app_runtime, "LegacyMod")
    checker = reference_client(client, app_runtime)
    _, key = await issue(app_runtime, "mymod")
    _, legacy_key = await issue(app_runtime, "legacymod")
    for spelling in ("mymod", "MyMod", "MYMOD"):
        result = await checker.check(key, "shop.com", product=spelling)
        assert result.status == "active", spelling
    for spelling in ("LegacyMod", "legacymod"):
        assert (await checker.check(legacy_key, "legacy.com", product=spelling)).status == "active"
    result = await checker.check(key, "shop.com", product="MyMod2")
    assert (result.status, result.reason) == ("invalid", "product_mismatch")


async def _insert_legacy_product(runtime, code: str) -> int:
    """A product row as an older version stored it: the code in the case it was typed."""
    now = runtime.licenses.now()
    row = ProductSpec(code="placeholder", name="Legacy").model_dump()
    row.update(
        code=code,
        key_prefix=code.upper()[:12],
        features="[]",
        created_at=now,
        updated_at=now,
    )
    async with runtime.db.write() as conn:
        return await product_rows.insert_product(conn, row)

"""The validated inputs of the licensing layer (licensing/specs.py), hostile values included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from license_server.licensing.specs import LicenseSpec, ProductChanges, ProductSpec

BLANKS = [" ", "   ", "\t", " \u3000 ", "\u00a0"]


@pytest.mark.parametrize("blank", BLANKS)
def test_a_licensee_of_only_whitespace_is_refused(blank):
    with pytest.raises(ValidationError, match="empty or only whitespace") as info:
        LicenseSpec(product="m", licensee=blank, email="a@example.org")
    assert info.value.errors()[0]["loc"] == ("licensee",)


@pytest.mark.parametrize("blank", BLANKS)
def test_a_product_name_of_only_whitespace_is_refused(blank):
    with pytest.raises(ValidationError, match="empty or only whitespace"):
        ProductSpec(code="m", name=blank)
    with pytest.raises(ValidationError, match="empty or only whitespace"):
        ProductChanges(name=blank)
    with pytest.raises(ValidationError, match="empty or only whitespace"):
        ProductSpec(code="m", name="M", features=("ok", "  "))


def test_required_text_is_stripped_and_optional_text_may_be_empty():
    spec = LicenseSpec(product="m", licensee="  Smith & Sons ", email="a@example.org", company=" ")
    assert (spec.licensee, spec.company, spec.notes) == ("Smith & Sons", "", "")
    assert ProductChanges().name is None


@pytest.mark.parametrize(
    "value", ["", "A\x00B", "line\nbreak", "x" * 201, "caf\udce9", b"\xff\xfe", 42, None, ["A"]]
)
def test_hostile_licensees_are_refused(value):
    with pytest.raises(ValidationError):
        LicenseSpec(product="m", licensee=value, email="a@example.org")

"""Validated inputs for creating products and issuing licenses (pydantic, ASVS 4.0.3 V5.1.3).

Every entry point (CLI, admin, API) builds one of these, so a value is checked the same way
wherever it comes from; a failure names the field in one line.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from license_server.licensing.domains import (
    InvalidHost,
    normalise_directory,
    parse_domain_rule,
    parse_ip_rule,
)
from license_server.licensing.license_keys import PREFIX_PATTERN

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def _plain_text(value: str) -> str:
    value = value.strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must not contain control characters")
    return value


def _required(value: str) -> str:
    # `min_length` is checked before the strip: "   " would pass it and be stored as "".
    if not value:
        raise ValueError("must not be empty or only whitespace")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]
# A PlainText that must say something (a name, a licensee): empty after stripping is refused.
RequiredText = Annotated[str, AfterValidator(_plain_text), AfterValidator(_required)]


def default_prefix(code: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", code.upper())[:12] or "LIC"


class ProductSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1, max_length=32)
    name: RequiredText = Field(min_length=1, max_length=200)
    key_prefix: str | None = None
    seats: int = Field(1, ge=1, le=100_000)
    local_key_days: int = Field(7, ge=1, le=365)
    grace_days: int = Field(14, ge=0, le=365)
    dev_host_allowance: int = Field(3, ge=0, le=1000)
    features: tuple[RequiredText, ...] = ()
    whmcs_secret: str | None = Field(None, min_length=1, max_length=255)
    allow_domain_conflict: bool = False
    allow_ip_conflict: bool = False
    allow_directory_conflict: bool = False
    free_trial: bool = False
    max_reissues: int | None = Field(None, ge=0, le=10_000)
    # Hours a customer waits between two reissues on the customer page (0: no cooldown).
    reissue_cooldown_hours: int = Field(0, ge=0, le=87_600)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _CODE.match(value):
            raise ValueError("use 1-32 of letters, digits, '_', '.', '-', starting alphanumeric")
        # Codes are case-insensitive (modules send them in whatever case their author typed):
        # one stored spelling, so `MyMod` and `mymod` cannot become two products.
        return value.lower()

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not PREFIX_PATTERN.match(value):
            raise ValueError("use 1-12 of A-Z and 0-9")
        return value

    def prefix(self) -> str:
        return self.key_prefix or default_prefix(self.code)


class ProductChanges(BaseModel):
    """Changes to an existing product; None means unchanged (the code and prefix never
    change: they are signed into every key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RequiredText | None = Field(None, min_length=1, max_length=200)
    seats: int | None = Field(None, ge=1, le=100_000)
    local_key_days: int | None = Field(None, ge=1, le=365)
    grace_days: int | None = Field(None, ge=0, le=365)
    dev_host_allowance: int | None = Field(None, ge=0, le=1000)
    whmcs_secret: str | None = Field(None, min_length=1, max_length=255)
    allow_domain_conflict: bool | None = None
    allow_ip_conflict: bool | None = None
    allow_directory_conflict: bool | None = None
    free_trial: bool | None = None
    max_reissues: int | None = Field(None, ge=0, le=10_000)
    unlimited_reissues: bool = False
    reissue_cooldown_hours: int | None = Field(None, ge=0, le=87_600)
    features: tuple[RequiredText, ...] | None = None
    clear_whmcs_secret: bool = False  # no secret any more: WHMCS answers carry no md5hash

    @model_validator(mode="after")
    def _one_way_each(self) -> ProductChanges:
        if self.clear_whmcs_secret and self.whmcs_secret is not None:
            raise ValueError("whmcs_secret: set a new secret or clear it, not both")
        if self.unlimited_reissues and self.max_reissues is not None:
            raise ValueError("max_reissues: a limit or unlimited, not both")
        return self


class LicenseTerms(BaseModel):
    """What a license says about its holder and where it may run: given at issue and changed
    later by staff ("edit rules"); one set of checks for both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    licensee: RequiredText = Field(min_length=1, max_length=200)
    company: PlainText = Field("", max_length=200)
    domains: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    seats: int | None = Field(None, ge=1, le=100_000)
    notes: PlainText = Field("", max_length=5000)

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _each(values, parse_domain_rule)

    @field_validator("ips")
    @classmethod
    def _ips(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _each(values, parse_ip_rule)

    @field_validator("directories")
    @classmethod
    def _directories(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _each(values, normalise_directory)

    def rules(self) -> list[tuple[str, str]]:
        return (
            [("domain", value) for value in self.domains]
            + [("ip", value) for value in self.ips]
            + [("directory", value) for value in self.directories]
        )


def _representable(day: dt.date) -> dt.date:
    # The expiry is stored as the instant after the last day (end_of_day_utc): the day after
    # 9999-12-31 does not exist, and a date that far ahead means "no expiry" anyway.
    if day.year >= 9999:
        raise ValueError("the date is too far ahead; leave it empty for no expiry")
    return day


# A license's last valid day (UTC), as every entry point (CLI, admin, API) reads it.
ExpiryDay = Annotated[dt.date, AfterValidator(_representable)]


class LicenseSpec(LicenseTerms):
    product: str = Field(min_length=1, max_length=32)
    email: EmailStr
    expires: ExpiryDay | None = None


def _each(values, parse) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(parse(value))
        except (InvalidHost, ValueError) as exc:
            raise ValueError(str(exc)) from None
    return tuple(dict.fromkeys(out))


def end_of_day_utc(day: dt.date) -> int:
    """`--expires 2027-01-31` means usable through that whole day (UTC)."""
    after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(after.timestamp())

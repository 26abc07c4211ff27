"""The vendor API's request and answer models (pydantic): what the handlers validate and
render, and what the OpenAPI document is generated from. Request bodies reuse the models every
other entry point validates with (`licensing.specs`), so a value is checked the same way from
the API, the admin and the CLI. Answers never carry a full license key, except
`LicenseCreated`, once."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from license_server.licensing.lifecycle import effective_status
from license_server.licensing.models import License, Product, Status
from license_server.licensing.specs import ExpiryDay

_ANSWER = ConfigDict(frozen=True)
_REQUEST = ConfigDict(extra="forbid", frozen=True)


def iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


# -- requests -------------------------------------------------------------------------------


class NoBody(BaseModel):
    """An action that takes no options: an empty body, or `{}`."""

    model_config = _REQUEST


class RenewRequest(BaseModel):
    model_config = _REQUEST

    expires: ExpiryDay | None = Field(
        description="The last valid day (UTC), or null for no expiry.",
    )


class LicenseListQuery(BaseModel):
    model_config = _REQUEST

    key: str | None = Field(
        None, min_length=1, max_length=255,
        description="A license key: the page holds the license of this key, if any.",
    )  # fmt: skip
    status: Status | None = None
    product: str | None = Field(None, min_length=1, max_length=32, description="Product code.")
    cursor: str | None = Field(
        None, min_length=1, max_length=64, description="`next_cursor` of the previous page."
    )
    limit: int = Field(50, ge=1, le=200)


# -- answers --------------------------------------------------------------------------------


class ProductOut(BaseModel):
    model_config = _ANSWER

    code: str
    name: str
    key_prefix: str
    seats: int
    local_key_days: int
    grace_days: int
    dev_host_allowance: int
    features: list[str]
    has_whmcs_secret: bool
    allow_domain_conflict: bool
    allow_ip_conflict: bool
    allow_directory_conflict: bool
    free_trial: bool
    max_reissues: int | None

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        return cls(
            code=product.code, name=product.name, key_prefix=product.key_prefix,
            seats=product.seats, local_key_days=product.local_key_days,
            grace_days=product.grace_days, dev_host_allowance=product.dev_host_allowance,
            features=list(product.features), has_whmcs_secret=product.has_whmcs_secret,
            allow_domain_conflict=product.allow_domain_conflict,
            allow_ip_conflict=product.allow_ip_conflict,
            allow_directory_conflict=product.allow_directory_conflict,
            free_trial=product.free_trial, max_reissues=product.max_reissues,
        )  # fmt: skip


class ProductList(BaseModel):
    model_config = _ANSWER

    items: list[ProductOut]


class Rules(BaseModel):
    model_config = _ANSWER

    domains: list[str]
    ips: list[str]
    directories: list[str]


class BindingOut(BaseModel):
    model_config = _ANSWER

    kind: Literal["domain", "ip", "directory"]
    value: str
    raw_value: str
    is_dev: bool
    created_at: str
    last_seen_at: str


class LicenseOut(BaseModel):
    model_config = _ANSWER

    id: int
    product: str
    status: Status = Field(description="As the next verification sees it (expired once past).")
    licensee: str
    company: str
    email: str
    expires_at: str | None
    seats: int
    reissue_count: int
    notes: str
    key_kind: Literal["signed", "legacy"]
    rules: Rules
    bindings: list[BindingOut]
    created_at: str
    updated_at: str

    @classmethod
    def fields_of(cls, license: License, now: int) -> dict:
        return dict(
            id=license.id, product=license.product.code,
            status=effective_status(license.status, license.expires_at, now),
            licensee=license.licensee_name, company=license.licensee_company,
            email=license.licensee_email, expires_at=iso(license.expires_at),
            seats=license.seats, reissue_count=license.reissue_count, notes=license.notes,
            key_kind=license.key_kind.value,
            rules=Rules(domains=list(license.rules_of("domain")), ips=list(license.rules_of("ip")),
                        directories=list(license.rules_of("directory"))),
            bindings=[BindingOut(kind=b.kind, value=b.value, raw_value=b.raw_value,
                                 is_dev=b.is_dev, created_at=iso(b.created_at),
                                 last_seen_at=iso(b.last_seen_at)) for b in license.bindings],
            created_at=iso(license.created_at), updated_at=iso(license.updated_at),
        )  # fmt: skip

    @classmethod
    def of(cls, license: License, now: int) -> LicenseOut:
        return cls(**cls.fields_of(license, now))


class LicenseCreated(LicenseOut):
    license_key: str = Field(description="The license key, in this answer only: store it.")


class LicenseSummary(BaseModel):
    model_config = _ANSWER

    id: int
    product: str
    status: Status
    licensee: str
    email: str
    expires_at: str | None
    seats: int


class LicensePage(BaseModel):
    model_config = _ANSWER

    items: list[LicenseSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class FieldProblem(BaseModel):
    location: Literal["body", "query", "path", "header"]
    field: str
    pointer: str = Field(description="JSON pointer into the body ('' for the whole of it).")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem document (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None

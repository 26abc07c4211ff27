"""The vendor API's request and answer models (pydantic): what the handlers validate and
render, and what the OpenAPI document is generated from. Request bodies reuse the models every
other entry point validates with (`licensing.specs`), so a value is checked the same way from
the API, the admin and the CLI. Answers never carry a full license key, except
`LicenseCreated`, once."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from license_server.licensing.lifecycle import effective_status
from license_server.licensing.models import License, Product, Status
from license_server.licensing.specs import ExpiryDay, PlainText, RequiredText

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


class TokenRequest(BaseModel):
    """`api_key`: exchange the API key sent as the bearer credential for a new token family;
    `refresh_token`: spend a refresh token for the next pair of its family."""

    model_config = _REQUEST

    grant_type: Literal["api_key", "refresh_token"]
    refresh_token: str | None = Field(
        None, min_length=1, max_length=100, description="For grant_type refresh_token only."
    )

    @model_validator(mode="after")
    def _grant_fields(self) -> TokenRequest:
        if self.grant_type == "refresh_token" and self.refresh_token is None:
            raise ValueError("refresh_token: required for grant_type refresh_token")
        if self.grant_type == "api_key" and self.refresh_token is not None:
            raise ValueError("refresh_token: only with grant_type refresh_token")
        return self


_RULES = 1000  # per kind, per request


class LicensePatch(BaseModel):
    """Changes to a license's terms; fields left out stay as they are. `seats` null: follow
    the product's seats. Rule lists replace the license's rules of that kind."""

    model_config = _REQUEST

    licensee: RequiredText = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    company: PlainText = Field(None, max_length=200)  # type: ignore[assignment]
    seats: int | None = Field(None, ge=1, le=100_000)
    notes: PlainText = Field(None, max_length=5000)  # type: ignore[assignment]
    domains: tuple[str, ...] = Field(None, max_length=_RULES)  # type: ignore[assignment]
    ips: tuple[str, ...] = Field(None, max_length=_RULES)  # type: ignore[assignment]
    directories: tuple[str, ...] = Field(None, max_length=_RULES)  # type: ignore[assignment]


class BindingRelease(BaseModel):
    model_config = _REQUEST

    kind: Literal["domain", "ip", "directory"]
    value: str = Field(min_length=1, max_length=1000, description="As listed in `value`.")


def _rfc3339_only(value: object) -> object:
    # pydantic also reads a number as Unix time; the document promises RFC 3339 date-times,
    # and schemathesis holds the API to it (tests/test_api_schema.py).
    if not isinstance(value, str) or not value[:4].isdigit() or "T" not in value.upper():
        raise ValueError("an RFC 3339 date-time, e.g. 2026-12-04T10:00:00Z")
    return value


# A date-time with its offset, in the RFC 3339 form the OpenAPI document gives (format: date-time).
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]


class AttemptQuery(BaseModel):
    model_config = _REQUEST

    license: int | None = Field(None, ge=1, le=2**63 - 1, description="License id.")
    result: str | None = Field(None, min_length=1, max_length=32)
    reason: str | None = Field(None, min_length=1, max_length=64)
    product: str | None = Field(None, min_length=1, max_length=64)
    ip: str | None = Field(
        None, min_length=1, max_length=64, description="An address, or an IPv4 range (/8../32)."
    )
    domain: str | None = Field(None, min_length=1, max_length=253)
    since: Rfc3339 | None = Field(None, description="RFC 3339, inclusive.")
    until: Rfc3339 | None = Field(None, description="RFC 3339, exclusive.")
    cursor: str | None = Field(None, min_length=1, max_length=80)
    limit: int = Field(50, ge=1, le=200)


class PageQuery(BaseModel):
    model_config = _REQUEST

    cursor: str | None = Field(None, min_length=1, max_length=64)
    limit: int = Field(50, ge=1, le=200)


class AlertQuery(BaseModel):
    model_config = _REQUEST

    state: Literal["unresolved", "open", "acknowledged", "resolved", "all"] = Field(
        "unresolved", description="unresolved = open or acknowledged."
    )
    detector: str | None = Field(None, pattern=r"^[a-z0-9_.-]{1,64}$")
    severity: Literal["low", "medium", "high"] | None = None
    license: int | None = Field(None, ge=1, le=2**63 - 1, description="License id.")
    since: Rfc3339 | None = Field(None, description="Seen at or after (RFC 3339).")
    until: Rfc3339 | None = Field(None, description="Seen before (RFC 3339).")
    cursor: str | None = Field(None, min_length=1, max_length=64)
    limit: int = Field(50, ge=1, le=200)


class BanIn(BaseModel):
    model_config = _REQUEST

    kind: Literal["domain", "ip"]
    value: str = Field(min_length=1, max_length=300, description="A domain, an IP or a range.")
    reason: str = Field("", max_length=500)


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
    reissue_cooldown_hours: int = Field(
        description="Hours a customer waits between two reissues on /activate (0: none)."
    )

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
            reissue_cooldown_hours=product.reissue_cooldown_hours,
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


class TokenAnswer(BaseModel):
    """RFC 6749 §5.1 fields; the access token is an EdDSA JWT (RFC 7519) for 15 minutes."""

    model_config = _ANSWER

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_token: str = Field(description="Single use: spend it for the next pair.")
    refresh_token_expires_in: int
    scope: str = Field(description="The API key's scopes, space separated.")


class BindingList(BaseModel):
    model_config = _ANSWER

    items: list[BindingOut]


class AttemptOut(BaseModel):
    model_config = _ANSWER

    id: int
    at: str = Field(description="UTC, milliseconds.")
    endpoint: str
    source_ip: str
    reported_ip: str
    domain_raw: str
    domain: str
    directory: str
    license_id: int | None
    product: str
    result: str
    reason: str
    client_version: str
    user_agent: str
    latency_us: int


class AttemptPage(BaseModel):
    model_config = _ANSWER

    items: list[AttemptOut]
    next_cursor: str | None


class BanOut(BaseModel):
    model_config = _ANSWER

    id: int
    kind: Literal["domain", "ip"]
    value: str
    reason: str
    created_at: str
    created_by: str


class BanPage(BaseModel):
    model_config = _ANSWER

    items: list[BanOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    model_config = _ANSWER

    id: int
    detector: str
    subject: str = Field(description="What it is about: license:12, ip:203.0.113.7, ...")
    severity: Literal["low", "medium", "high"]
    summary: str
    evidence: dict = Field(
        description="What the detector recorded (counts, window, sample attempts), with "
        "`actions_taken` when the server acted on its own."
    )
    license_id: int | None
    state: Literal["open", "acknowledged", "resolved"]
    occurrences: int = Field(description="Times it fired while unresolved.")
    first_seen: str = Field(description="UTC, milliseconds.")
    last_seen: str = Field(description="UTC, milliseconds.")
    state_changed_at: str | None
    state_changed_by: str = Field(description="The actor: staff:3, api:lsk_..., system:...")


class AlertPage(BaseModel):
    model_config = _ANSWER

    items: list[AlertOut]
    next_cursor: str | None


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


# -- webhooks (issue #14) -------------------------------------------------------------------


class WebhookOut(BaseModel):
    model_config = _ANSWER

    id: int
    url: str
    description: str
    events: list[str]
    enabled: bool
    paused: bool
    paused_at: str | None = Field(description="When it was paused (ISO 8601 UTC), or null.")
    paused_reason: str
    consecutive_failures: int
    created_by: str
    created_at: str

    @classmethod
    def of(cls, endpoint) -> WebhookOut:
        return cls(
            id=endpoint.id, url=endpoint.url, description=endpoint.description,
            events=list(endpoint.events), enabled=endpoint.enabled, paused=endpoint.paused,
            paused_at=None if endpoint.paused_ms is None else iso(endpoint.paused_ms // 1000),
            paused_reason=endpoint.paused_reason,
            consecutive_failures=endpoint.consecutive_failures, created_by=endpoint.created_by,
            created_at=iso(endpoint.created_ms // 1000) or "",
        )  # fmt: skip


class WebhookList(BaseModel):
    model_config = _ANSWER

    items: list[WebhookOut]


class DeliveryQuery(BaseModel):
    model_config = _REQUEST

    before: int | None = Field(None, ge=1, le=2**63 - 1, description="A delivery id (keyset).")
    limit: int = Field(50, ge=1, le=200)


class DeliveryAttemptOut(BaseModel):
    model_config = _ANSWER

    at: str
    status: int | None = Field(description="The receiver's HTTP status, or null (no answer).")
    error: str
    duration_ms: int


class DeliveryOut(BaseModel):
    model_config = _ANSWER

    id: int
    event_id: str = Field(description="The webhook-id header: the same on every retry.")
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    attempts: list[DeliveryAttemptOut]
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class DeliveryPageOut(BaseModel):
    model_config = _ANSWER

    items: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page.")


class ResumeAnswer(BaseModel):
    model_config = _ANSWER

    webhook: WebhookOut
    redelivering: int = Field(description="Deliveries due again (failed or held while paused).")


class WebhookPublicKey(BaseModel):
    model_config = _ANSWER

    public_key: str = Field(description="Standard Webhooks form: whpk_ + base64 of the key.")
    algorithm: Literal["ed25519"]
    signature_version: Literal["v1a"]
    tolerance_seconds: int = Field(description="Reject a webhook-timestamp further off.")

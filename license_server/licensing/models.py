"""The licensing domain's value objects, built from database rows by `repository.py`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # issued or reissued, waiting for its first check to bind
    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    REVOKED = "revoked"


class KeyKind(StrEnum):
    SIGNED = "signed"  # our Ed25519-signed format, checkable offline
    LEGACY = "legacy"  # imported from the WHMCS Licensing Addon (random strings)


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    code: str
    name: str
    key_prefix: str
    local_key_days: int
    grace_days: int
    seats: int
    dev_host_allowance: int
    features: tuple[str, ...]
    has_whmcs_secret: bool
    # WHMCS Licensing Addon options: an allowed conflict means that binding is not checked.
    allow_domain_conflict: bool = False
    allow_ip_conflict: bool = False
    allow_directory_conflict: bool = False
    free_trial: bool = False
    max_reissues: int | None = None
    # Hours between two customer reissues of one license (the customer page); 0: none.
    reissue_cooldown_hours: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # domain | ip | directory
    value: str


@dataclass(frozen=True, slots=True)
class Binding:
    kind: str
    value: str  # normalised, what comparisons use
    raw_value: str  # exactly as the client sent it (WHMCS clients compare it verbatim)
    is_dev: bool
    created_at: int
    last_seen_at: int


@dataclass(frozen=True, slots=True)
class License:
    id: int
    product: Product
    key_kind: KeyKind
    status: Status
    licensee_name: str
    licensee_company: str
    licensee_email: str
    expires_at: int | None
    seats: int
    reissue_count: int
    notes: str
    revision: int
    created_at: int
    updated_at: int
    rules: tuple[Rule, ...] = ()
    bindings: tuple[Binding, ...] = ()
    whmcs_service_id: int | None = None
    billing_cycle: str = ""
    last_access_at: int | None = None
    last_reissued_at: int | None = None  # the latest reissue (cooldown of the customer page)

    def rules_of(self, kind: str) -> tuple[str, ...]:
        return tuple(rule.value for rule in self.rules if rule.kind == kind)

    def bindings_of(self, kind: str) -> tuple[Binding, ...]:
        return tuple(binding for binding in self.bindings if binding.kind == kind)

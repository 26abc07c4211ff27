"""The verify decision: given a license and what a module reports, what is the answer?

Pure rules, no I/O, so that each branch is tested directly and both endpoints (native and
WHMCS-compatible) decide the same way. Order matters and is part of the contract:
product, status (revoked > suspended > expired), bans, the domain (allow-rules, then its
binding: bound already, a free development-host slot, a free seat, or refused), then IP and
directory (allow-rules, and the bindings of WHMCS-style licenses).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from license_server.licensing.domains import (
    directory_matches_rule,
    domain_matches_rule,
    ip_matches_rule,
    is_dev_host,
)
from license_server.licensing.lifecycle import effective_status
from license_server.licensing.models import License, Status


class Bind(StrEnum):
    NONE = "none"
    SEAT = "seat"  # first use of a domain: takes a seat
    DEV = "dev"  # a development host: no seat


@dataclass(frozen=True, slots=True)
class Facts:
    """What the module reported, normalised (raw values travel separately)."""

    domain: str
    ip: str  # as the module reports itself, else the caller's address
    directory: str
    product: str  # requested product code, "" if not sent


class Answer(StrEnum):
    """The statuses that go on the wire (a pending license answers active once bound)."""

    ACTIVE = "active"
    INVALID = "invalid"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Verdict:
    answer: Answer
    reason: str
    bind: Bind = Bind.NONE


def refused(reason: str) -> Verdict:
    return Verdict(Answer.INVALID, reason)


def accepted(reason: str, bind: Bind = Bind.NONE) -> Verdict:
    return Verdict(Answer.ACTIVE, reason, bind)


def decide(
    license: License,
    facts: Facts,
    *,
    now: int,
    dev_patterns: tuple[str, ...],
    banned: bool,
) -> Verdict:
    product = license.product
    if facts.product and facts.product.lower() != product.code.lower():  # codes ignore case
        return refused("product_mismatch")
    status = effective_status(license.status, license.expires_at, now)
    if status in (Status.REVOKED, Status.SUSPENDED, Status.EXPIRED):
        return Verdict(Answer(status.value), status.value)
    if banned:
        return Verdict(Answer.SUSPENDED, "banned")
    dev = product.dev_host_allowance > 0 and is_dev_host(facts.domain, dev_patterns)
    if not dev and not product.allow_domain_conflict:
        rules = license.rules_of("domain")
        if rules and not any(domain_matches_rule(facts.domain, rule) for rule in rules):
            return refused("domain_not_allowed")
    # The domain is judged before IP and directory: a module on a foreign site hears
    # "Domain Invalid" (as from WHMCS), not a message about its server address.
    domain_verdict = _domain_verdict(license, facts, dev)
    if domain_verdict.answer is Answer.INVALID:
        return domain_verdict
    mismatch = _address_mismatch(license, facts)
    return refused(mismatch) if mismatch else domain_verdict


def _domain_verdict(license: License, facts: Facts, dev: bool) -> Verdict:
    product = license.product
    if product.allow_domain_conflict:
        return accepted("ok")
    bound = {b.value: b for b in license.bindings_of("domain")}
    if facts.domain in bound:
        return accepted("dev_host" if bound[facts.domain].is_dev else "ok")
    if dev and sum(b.is_dev for b in bound.values()) < product.dev_host_allowance:
        return accepted("dev_host", Bind.DEV)
    if sum(not b.is_dev for b in bound.values()) < license.seats:
        return accepted("activated", Bind.SEAT)
    return refused("seat_limit")


def _address_mismatch(license: License, facts: Facts) -> str | None:
    product = license.product
    if not product.allow_ip_conflict:
        # Allow-rules, and IPs bound by a WHMCS-style first check, both restrict.
        allowed = license.rules_of("ip") + tuple(b.value for b in license.bindings_of("ip"))
        if allowed and not any(ip_matches_rule(facts.ip, rule) for rule in allowed):
            return "ip_not_allowed"
    if not product.allow_directory_conflict:
        allowed = license.rules_of("directory") + tuple(
            b.value for b in license.bindings_of("directory")
        )
        if allowed and not any(directory_matches_rule(facts.directory, d) for d in allowed):
            return "directory_not_allowed"
    return None

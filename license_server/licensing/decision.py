"""The verify decision: given a license and what a module reports, what is the answer?

Pure rules, no I/O, so that each branch is tested directly and both endpoints (native and
WHMCS-compatible) decide the same way. Order matters and is part of the contract:
product, status (revoked > suspended > expired), bans, the domain (a free development-host
slot, else its allow-rules and binding: bound already, a free seat, or refused), then IP and
directory (allow-rules, and the bindings of WHMCS-style licenses).

Development hosts (DESIGN.md, "Bindings and domain rules") use no seat, up to the product's
allowance: what is truly local (reserved names, loopback and private addresses) always, and a
pattern host (``staging.*``) only under a domain the license is bound to (by a seat) or allowed
by a rule. A pattern alone freed any public site before: ``staging.pirate-shop.com`` is a site
like any other and takes a seat. Each dev-host verdict carries a `note` saying why it was free.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from license_server.licensing.domains import (
    DevHostPatterns,
    directory_matches_rule,
    domain_matches_rule,
    ip_matches_rule,
    local_host_kind,
    pattern_host_base,
)
from license_server.licensing.lifecycle import effective_status
from license_server.licensing.models import License, Status


class Bind(StrEnum):
    NONE = "none"
    SEAT = "seat"  # first use of a domain: takes a seat
    DEV = "dev"  # a development host: no seat


class Facts(NamedTuple):
    """What the module reported, normalised (raw values travel separately).

    A named tuple, as `RawBinding` and `Outcome`: immutable, and made and hashed (a kept
    verdict's key) in C, once per check (issue #16: a frozen dataclass took twice as long)."""

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
    # Why a host was accepted without a seat, in words for the customer ("" otherwise).
    note: str = ""


def refused(reason: str) -> Verdict:
    return Verdict(Answer.INVALID, reason)


def accepted(reason: str, bind: Bind = Bind.NONE, note: str = "") -> Verdict:
    return Verdict(Answer.ACTIVE, reason, bind, note)


def decide(
    license: License,
    facts: Facts,
    *,
    now: int,
    dev_patterns: DevHostPatterns,
    banned: bool,
) -> Verdict:
    product = license.product
    if facts.product and facts.product.lower() != product.code.lower():  # codes ignore case
        return refused("product_mismatch")
    # The domain is judged before IP and directory: a module on a foreign site hears
    # "Domain Invalid" (as from WHMCS), not a message about its server address.
    domain_verdict = decide_domain(
        license, facts.domain, now=now, dev_patterns=dev_patterns, banned=banned
    )
    if domain_verdict.answer is not Answer.ACTIVE:
        return domain_verdict
    mismatch = _address_mismatch(license, facts)
    return refused(mismatch) if mismatch else domain_verdict


def decide_domain(
    license: License, host: str, *, now: int, dev_patterns: DevHostPatterns, banned: bool
) -> Verdict:
    """Status, bans and the domain's rules and seats, without the IP and directory: the part
    of `decide` that a domain activated on the customer page goes through (it comes from a
    browser, not from the server the module runs on)."""
    status = effective_status(license.status, license.expires_at, now)
    if status in (Status.REVOKED, Status.SUSPENDED, Status.EXPIRED):
        return Verdict(Answer(status.value), status.value)
    if banned:
        return Verdict(Answer.SUSPENDED, "banned")
    return _domain_verdict(license, host, dev_patterns)


def _dev_host_note(license: License, host: str, patterns: DevHostPatterns) -> str | None:
    """Why ``host`` is a development host for this license, or None if it is not one."""
    kind = local_host_kind(host)
    if kind is not None:
        return f"{host} is a development host ({kind})"
    pattern = patterns.match(host)
    if pattern is None:
        return None
    # Only seat bindings are bases: a dev binding must not free further hosts beneath it.
    seated = [b.value for b in license.bindings_of("domain") if not b.is_dev]
    base = pattern_host_base(host, seated)
    if base is not None:
        return (
            f"{host} is a development host: a {pattern} subdomain of {base}, bound to this license"
        )
    for rule in license.rules_of("domain"):
        if pattern_host_base(host, (rule.removeprefix("*."),)) is not None:
            return f"{host} is a development host: a {pattern} subdomain allowed by the rule {rule}"
    return None


def _domain_verdict(license: License, host: str, patterns: DevHostPatterns) -> Verdict:
    """The domain's allow-rules and binding: a dev host, bound already, a free seat, or refused."""
    product = license.product
    if product.allow_domain_conflict:
        return accepted("ok")
    bound = license.bindings_of("domain")
    binding = next((b for b in bound if b.value == host), None)
    if binding is not None and binding.is_dev:
        # Bound as a dev host earlier (perhaps a public staging.* under the old rules): it is
        # the license's own and stays honoured until a reissue; it keeps its dev slot, so no
        # new free host is made for it. Allow-rules never applied to dev hosts.
        note = _dev_host_note(license, host, patterns)
        note = note or f"{host} was bound to this license as a development host under earlier rules"
        return accepted("dev_host", note=note)
    # A dev host is looked for only on a first use, so the common check (a bound site) pays
    # nothing for it; once the dev slots are used up, a dev host is a site like any other.
    if binding is None and sum(b.is_dev for b in bound) < product.dev_host_allowance:
        note = _dev_host_note(license, host, patterns)
        if note is not None:
            return accepted("dev_host", Bind.DEV, note)
    rules = license.rules_of("domain")
    if rules and not any(domain_matches_rule(host, rule) for rule in rules):
        return refused("domain_not_allowed")
    if binding is not None:
        return accepted("ok")
    if sum(not b.is_dev for b in bound) < license.seats:
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

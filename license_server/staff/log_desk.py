"""The attempt log and the bans, as staff see them in the admin (issue #12).

Service functions that check the permission again (ASVS 4.0.3 V4.1.1, V4.1.3), as `console.py`
does for licenses: the route checks it first. Reading the attempt log is keyset-paginated on
(at_ms, id), newest first, so that every filter is one index range however long the log is
(db/migrations.py, migration 9). Filters arrive as text and leave as typed values or a
ValueError naming the field (V5.1.3, positive validation; V5.1.4 structured data): a result from
the closed list, a domain through the verifier's own normaliser, an address or an octet-aligned
IPv4 range, UTC times with from <= to.

Bans go through `BanList` (licensing/bans.py): the parser the CLI uses, the service's single
write path with the staff actor, and an audit row with the ban before and after in the same
transaction (V7.1.3, V7.2.2); the ban list is reloaded at once, so the next check sees it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from license_server.db import attempts as attempt_rows
from license_server.db import bans as ban_rows
from license_server.licensing.bans import BanList
from license_server.licensing.decision import Answer
from license_server.licensing.domains import normalise_domain, normalise_ip
from license_server.licensing.service import LicenseService
from license_server.staff.accounts import SignedIn, StaffAccounts
from license_server.staff.console import require

PAGE_SIZE = 50
BAN_PAGE_SIZE = 100
EXPORT_PAGE_SIZE = 1000
MAX_ID = 2**63 - 1

# Every result an attempt can have (licensing/attempt_log.py).
RESULTS: tuple[str, ...] = (*(a.value for a in Answer), "rate_limited", "malformed")
_ID = re.compile(r"[0-9]{1,19}")
_WORD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")
# An IPv4 range is searched as text ranges of its octet-aligned prefixes: at most this many.
_MAX_IP_RANGES = 16


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    """What the attempt log is narrowed to; empty is everything."""

    equal: dict[str, object] = field(default_factory=dict)  # column -> value
    ip_ranges: tuple[tuple[str, str], ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None  # exclusive

    @classmethod
    def parse(cls, fields: dict[str, str]) -> AttemptFilter:
        """From the page's fields (name -> text; empty means not filtered). Raises ValueError
        "field: what is wrong" for the first bad one."""
        equal: dict[str, object] = {}
        ranges: tuple[tuple[str, str], ...] = ()
        text = {name: value.strip() for name, value in fields.items() if value.strip()}
        if "result" in text:
            if text["result"] not in RESULTS:
                raise ValueError("result: not a result an attempt can have")
            equal["result"] = text["result"]
        for name in ("reason", "product"):
            if name in text:
                if not _WORD.fullmatch(text[name]):
                    raise ValueError(f"{name}: letters, digits and _ . : - only, at most 64")
                equal[name] = text[name]
        if "domain" in text:
            if len(text["domain"]) > 253:
                raise ValueError("domain: at most 253 characters")
            try:
                equal["domain"] = normalise_domain(text["domain"])
            except ValueError:
                raise ValueError("domain: not a domain name or IP address") from None
        if "ip" in text:
            ip, ranges = _address_or_range(text["ip"])
            if ip is not None:
                equal["source_ip"] = ip
        if "license" in text:
            if not _ID.fullmatch(text["license"]) or not 0 < int(text["license"]) <= MAX_ID:
                raise ValueError("license: a license id (a whole number)")
            equal["license_id"] = int(text["license"])
        since = _utc_ms("from", text.get("from"))
        until = _utc_ms("to", text.get("to"))
        if until is not None:  # "to 12:30" takes in 12:30:59 too
            until += 1000 if len(text["to"]) > 16 else 60_000
        if since is not None and until is not None and since >= until:
            raise ValueError("from: must be before to")
        return cls(equal, ranges, since, until)


def _address_or_range(text: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    if len(text) > 64:
        raise ValueError("ip: at most 64 characters")
    if "/" not in text:
        try:
            return normalise_ip(text), ()
        except ValueError:
            raise ValueError("ip: not an IP address") from None
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("ip: not an IP address or range (like 203.0.113.0/24)") from None
    if network.num_addresses == 1:
        return str(network.network_address), ()
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen < 8:
        raise ValueError("ip: ranges are IPv4, /8 or narrower (give an IPv6 address exactly)")
    aligned = -(-network.prefixlen // 8) * 8  # the next whole octet
    if 2 ** (aligned - network.prefixlen) > _MAX_IP_RANGES:
        raise ValueError("ip: a range this wide must end on a whole octet (/8, /16, /24)")
    ranges = []
    for part in network.subnets(new_prefix=aligned):
        octets = str(part.network_address).split(".")[: aligned // 8]
        prefix = ".".join(octets) + "."
        ranges.append((prefix, prefix[:-1] + "/"))  # '/' sorts right after '.'
    return None, tuple(ranges)


def _utc_ms(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not _LOCAL_TIME.fullmatch(text):
        raise ValueError(f"{name}: a date and time like 2026-01-31T13:45 (UTC)")
    try:
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name}: not a date and time that exists") from None
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict]
    next_before: int | None  # the id to continue after, None on the last page


class LogDesk:
    def __init__(self, licenses: LicenseService, bans: BanList, accounts: StaffAccounts) -> None:
        self._licenses = licenses
        self._bans = bans
        self._accounts = accounts

    # -- the attempt log --------------------------------------------------------------------

    async def attempts(
        self, staff: SignedIn, where: AttemptFilter, before: int | None = None
    ) -> Page:
        """A page of attempts, newest first, continuing after the attempt `before`."""
        require(staff, "attempt:read")
        rows = await self._attempt_rows(where, before, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page(rows, rows[-1]["id"] if more else None)

    async def _attempt_rows(self, where: AttemptFilter, before: int | None, limit: int):
        async with self._licenses.db.read() as conn:
            after = None
            if before is not None:
                at_ms = await attempt_rows.attempt_position(conn, before)
                if at_ms is None:
                    return []  # pruned since: so is everything older
                after = (at_ms, before)
            return await attempt_rows.attempt_page(
                conn, equal=where.equal, ip_ranges=where.ip_ranges, since_ms=where.since_ms,
                until_ms=where.until_ms, after=after, limit=limit,
            )  # fmt: skip

    async def export(
        self, staff: SignedIn, where: AttemptFilter, source_ip: str = ""
    ) -> AsyncIterator[list[dict]]:
        """Every filtered attempt, in pages of EXPORT_PAGE_SIZE (one short read each, so a
        long export never holds a transaction open). The export itself is audited first."""
        require(staff, "attempt:export")
        await self._audit(staff, "attempt.export", "attempts", {"filter": _described(where)},
                          source_ip)  # fmt: skip
        return self._export_pages(where)

    async def _export_pages(self, where: AttemptFilter) -> AsyncIterator[list[dict]]:
        before = None
        while True:
            rows = await self._attempt_rows(where, before, EXPORT_PAGE_SIZE)
            if rows:
                yield rows
            if len(rows) < EXPORT_PAGE_SIZE:
                return
            before = rows[-1]["id"]

    async def products(self, staff: SignedIn) -> list[str]:
        """Product codes, for the filter's choice."""
        require(staff, "attempt:read")
        return [product.code for product in await self._licenses.products()]

    # -- bans -------------------------------------------------------------------------------

    async def bans(self, staff: SignedIn, before: int | None = None) -> Page:
        """A page of bans, newest first; `created_by` names the account for staff."""
        require(staff, "ban:read")
        async with self._licenses.db.read() as conn:
            rows = await ban_rows.ban_page(conn, before_id=before, limit=BAN_PAGE_SIZE + 1)
        more = len(rows) > BAN_PAGE_SIZE
        rows = rows[:BAN_PAGE_SIZE]
        names = {f"staff:{a.id}": a.name for a in await self._accounts.all_accounts()}
        for row in rows:
            row["by"] = names.get(row["created_by"], row["created_by"] or "unknown")
        return Page(rows, rows[-1]["id"] if more else None)

    async def ban(
        self, staff: SignedIn, kind: str, value: str, reason: str, source_ip: str = ""
    ) -> str:
        """Ban a domain or an IP / range (ValueError if `value` is not one); the normalised
        value. In force at the next check."""
        require(staff, "ban:create")
        return await self._bans.ban(
            kind, value, reason, actor=staff.actor, also=self._audit_hook(staff, "ban.add",
                                                                           source_ip),
        )  # fmt: skip

    async def lift(self, staff: SignedIn, kind: str, value: str, source_ip: str = "") -> bool:
        """Lift a ban; False if there was none."""
        require(staff, "ban:delete")
        return await self._bans.unban(
            kind, value, actor=staff.actor, also=self._audit_hook(staff, "ban.lift", source_ip)
        )

    def _audit_hook(self, staff: SignedIn, action: str, source_ip: str):
        return ban_audit(self._licenses.audit, staff.actor, action, source_ip)

    async def _audit(
        self, staff: SignedIn, action: str, target: str, detail: dict, source_ip: str
    ) -> None:
        audit = self._licenses.audit

        async def work(writes) -> None:
            await audit.append(writes.conn, at=writes.now, actor=staff.actor, action=action,
                               target=target, detail=detail, source_ip=source_ip)  # fmt: skip

        await self._licenses.write(staff.actor, work)


def ban_audit(audit, actor, action: str, source_ip: str = ""):
    """BanList's `also` hook: the audit row of a ban or lift with the ban before and after, in
    the change's transaction (the admin's and the vendor API's bans alike)."""

    async def write(writes, before: dict | None, after: dict | None) -> None:
        ban = after or before or {}
        await audit.append(
            writes.conn, at=writes.now, actor=actor, action=action,
            target=f"ban:{ban.get('kind')}:{ban.get('value')}",
            detail={"before": _ban_detail(before), "after": _ban_detail(after)},
            source_ip=source_ip,
        )  # fmt: skip

    return write


def _ban_detail(ban: dict | None) -> dict | None:
    if ban is None:
        return None
    return {name: ban[name] for name in ("kind", "value", "reason") if name in ban}


def _described(where: AttemptFilter) -> dict:
    described: dict[str, object] = dict(where.equal)
    if where.ip_ranges:
        described["ip_prefixes"] = [low for low, _ in where.ip_ranges]
    if where.since_ms is not None:
        described["since_ms"] = where.since_ms
    if where.until_ms is not None:
        described["until_ms"] = where.until_ms
    return described

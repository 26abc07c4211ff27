"""Banned domains and IPs: checks answer `suspended`, as the WHMCS Licensing Addon does.

An IP ban is an address or a CIDR range (the same syntax as a license's IP rules). The list is
small and read on every check, so it is held in memory and reloaded after a change: made here,
or by another process (the CLI), which the change feed reports before the next check
(`forget`); `ttl` stays as a backstop. Ban and unban go through the service's single write
path, with their actor and change-log row. Exact values are a set lookup; ranges are kept
apart as parsed networks and scanned only when there are any, so a server without range bans
pays nothing for them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from license_server.db import bans as ban_rows
from license_server.db.database import Database
from license_server.licensing.actors import SYSTEM, Actor
from license_server.licensing.changes import ChangeKind, Coalesced
from license_server.licensing.domains import normalise_domain, parse_ip_rule

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# LicenseService.write: (actor, work) -> work's result, work getting a transaction with
# .conn, .now and .changed(kind).
WritePath = Callable[[Actor, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
# Run inside a ban's or unban's transaction with (writes, the ban before, the ban after):
# the admin writes its audit row there, so the row commits with the change or not at all.
AlsoWrite = Callable[[Any, dict | None, dict | None], Awaitable[None]]


class BanList:
    def __init__(self, db: Database, ttl: float, write_path: WritePath) -> None:
        self._db = db
        self._ttl = ttl
        # The service's single write path: a ban is a change like any other, with its actor.
        self._write_path = write_path
        self._domains: frozenset[str] = frozenset()
        self._ips: frozenset[str] = frozenset()
        self._ranges: tuple[_Network, ...] = ()
        self._loaded_at = float("-inf")
        self._changes = 0  # bumped by forget(): a reload that raced a change is not kept
        self._reload = Coalesced(self._read)

    def forget(self) -> None:
        """The bans changed (another process): reload before the next check uses them."""
        self._changes += 1
        self._loaded_at = float("-inf")

    async def is_banned(self, domain: str, ip: str) -> bool:
        if time.monotonic() - self._loaded_at > self._ttl:
            await self.reload()
        return (
            domain in self._domains or ip in self._ips or bool(self._ranges and self._in_range(ip))
        )

    def _in_range(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(
            address.version == network.version and address in network for network in self._ranges
        )

    async def reload(self) -> None:
        """Read the bans afresh; callers arriving together share one read (single flight),
        each getting a read that began after it called."""
        await self._reload()

    async def _read(self) -> None:
        changes = self._changes
        async with self._db.read() as conn:
            rows = await ban_rows.all_bans(conn)
        if changes != self._changes:
            return  # read before a change it was told about: a later reload has it
        self._domains = frozenset(r["value"] for r in rows if r["kind"] == "domain")
        ips = [r["value"] for r in rows if r["kind"] == "ip"]
        self._ips = frozenset(value for value in ips if "/" not in value)
        self._ranges = tuple(ipaddress.ip_network(value) for value in ips if "/" in value)
        self._loaded_at = time.monotonic()

    async def ban(
        self,
        kind: str,
        value: str,
        reason: str = "",
        *,
        actor: Actor = SYSTEM,
        also: AlsoWrite | None = None,
    ) -> str:
        """Ban `value` (normalised first; ValueError if it is not a domain / IP / range).
        `also(writes, before, after)` runs in the same transaction (the admin's audit row)."""
        normalised = _normalise(kind, value)
        reason = _reason(reason)

        async def work(writes: Any) -> None:
            before = await ban_rows.ban_of(writes.conn, kind, normalised) if also else None
            await ban_rows.add_ban(
                writes.conn, kind, normalised, reason, writes.now, str(writes.actor)
            )
            writes.changed(ChangeKind.BAN)
            if also is not None:
                after = {"kind": kind, "value": normalised, "reason": reason}
                await also(writes, before, after)

        await self._write_path(actor, work)
        await self.reload()
        return normalised

    async def unban(
        self, kind: str, value: str, *, actor: Actor = SYSTEM, also: AlsoWrite | None = None
    ) -> bool:
        normalised = _normalise(kind, value)

        async def work(writes: Any) -> bool:
            before = await ban_rows.ban_of(writes.conn, kind, normalised) if also else None
            removed = await ban_rows.remove_ban(writes.conn, kind, normalised)
            if removed:
                writes.changed(ChangeKind.BAN)
                if also is not None:
                    await also(writes, before, None)
            return removed

        removed = await self._write_path(actor, work)
        await self.reload()
        return removed

    async def all(self) -> list[dict]:
        async with self._db.read() as conn:
            return await ban_rows.all_bans(conn)


MAX_REASON_LENGTH = 500


def _reason(text: str) -> str:
    """The reason as plain text, checked before anything is written (ASVS 4.0.3 V5.1.3)."""
    text = text.strip()
    if len(text) > MAX_REASON_LENGTH:
        raise ValueError(f"reason: at most {MAX_REASON_LENGTH} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError("reason: must not contain control characters")
    try:
        text.encode("utf-8")  # bytes that were not UTF-8 arrive as surrogate escapes
    except UnicodeEncodeError:
        raise ValueError("reason: must be valid UTF-8 text") from None
    return text


def _normalise(kind: str, value: str) -> str:
    if kind == "domain":
        return normalise_domain(value)
    if kind == "ip":
        rule = parse_ip_rule(value)
        if "/" in rule:
            network = ipaddress.ip_network(rule)
            if network.num_addresses == 1:  # 192.0.2.1/32 is the address: one spelling, one row
                return str(network.network_address)
        return rule
    raise ValueError(f"a ban is on a 'domain' or an 'ip', not {kind!r}")

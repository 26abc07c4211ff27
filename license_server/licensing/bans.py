"""Banned domains and IPs: checks answer `suspended` (DESIGN.md, as the WHMCS addon does).

The list is small and read on every check, so it is held in memory and reloaded after a
change: made here, or by another process (the CLI), which the change feed reports before the
next check (`forget`); `ttl` stays as a backstop. Each ban/unban writes its change-log row in
its own transaction.
"""

from __future__ import annotations

import time

from license_server.db import bans as ban_rows
from license_server.db import changes as change_rows
from license_server.db.database import Database
from license_server.licensing.changes import ChangeKind
from license_server.licensing.domains import normalise_domain, normalise_ip


class BanList:
    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self._ttl = ttl
        self._domains: frozenset[str] = frozenset()
        self._ips: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._changes = 0  # bumped by forget(): a reload that raced a change is not kept

    def forget(self) -> None:
        """The bans changed (another process): reload before the next check uses them."""
        self._changes += 1
        self._loaded_at = float("-inf")

    async def is_banned(self, domain: str, ip: str) -> bool:
        if time.monotonic() - self._loaded_at > self._ttl:
            await self.reload()
        return domain in self._domains or ip in self._ips

    async def reload(self) -> None:
        changes = self._changes
        async with self._db.read() as conn:
            rows = await ban_rows.all_bans(conn)
        if changes != self._changes:
            return  # read before a change it was told about: a later reload has it
        self._domains = frozenset(r["value"] for r in rows if r["kind"] == "domain")
        self._ips = frozenset(r["value"] for r in rows if r["kind"] == "ip")
        self._loaded_at = time.monotonic()

    async def ban(self, kind: str, value: str, reason: str = "") -> str:
        normalised = _normalise(kind, value)
        async with self._db.write() as conn:
            await ban_rows.add_ban(conn, kind, normalised, reason, int(time.time()))
            await change_rows.record(conn, [(None, ChangeKind.BAN)], int(time.time()))
        await self.reload()
        return normalised

    async def unban(self, kind: str, value: str) -> bool:
        async with self._db.write() as conn:
            removed = await ban_rows.remove_ban(conn, kind, _normalise(kind, value))
            await change_rows.record(conn, [(None, ChangeKind.BAN)], int(time.time()))
        await self.reload()
        return removed

    async def all(self) -> list[dict]:
        async with self._db.read() as conn:
            return await ban_rows.all_bans(conn)


def _normalise(kind: str, value: str) -> str:
    if kind == "domain":
        return normalise_domain(value)
    if kind == "ip":
        return normalise_ip(value)
    raise ValueError(f"a ban is on a 'domain' or an 'ip', not {kind!r}")

"""The security events page: sign-in success and failure, MFA failure, permission denied,
rate limited, set-up links (ASVS 4.0.3 V7.1.3, V7.2.1, V7.2.2), with filters by kind,
account, address and time range, newest first in keyset pages (`security_event:read`).

The account filter takes a staff e-mail address or account id, and also finds attempts that
typed an address matching no account: those are stored only as a keyed hash of what was typed
(staff/security_events.py), so typing the same address here finds them.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from license_server.db.security_events import EventFilter
from license_server.staff.accounts import SignedIn
from license_server.staff.security_events import KINDS, fingerprint
from license_server.web.admin import filters
from license_server.web.admin.audit import changes
from license_server.web.admin.base import OVERSIGHT, message, render, requires


def _parse(query, oversight, staff_ids: dict[str, int]) -> tuple[EventFilter, dict[str, str]]:
    shown = {name: filters.text(query, name) for name in ("kind", "account", "ip")}
    shown["from"] = filters.text(query, "from", 10)
    shown["to"] = filters.text(query, "to", 10)
    if shown["kind"] and shown["kind"] not in KINDS:
        raise filters.BadFilter("kind: one of the kinds in the list")
    account_id, email_hash = None, None
    account = shown["account"]
    if account.isascii() and account.isdigit():
        if not 0 < int(account) < 2**63:
            raise filters.BadFilter("account: an account id or an e-mail address")
        account_id = int(account)
    elif account:
        account_id = staff_ids.get(account.lower())
        email_hash = oversight.email_hash(account)
    source_ip = None
    if shown["ip"]:
        try:
            source_ip = str(ipaddress.ip_address(shown["ip"]))
        except ValueError:
            raise filters.BadFilter("ip: one IPv4 or IPv6 address") from None
    since, until = filters.day(query, "from"), filters.day(query, "to", end=True)
    if since is not None and until is not None and since >= until:
        raise filters.BadFilter("from: a day before to")
    where = EventFilter(
        kind=shown["kind"] or None, account_id=account_id, email_hash=email_hash,
        source_ip=source_ip, since=since, until=until,
    )  # fmt: skip
    return where, shown


def _who(row: dict, names: dict[int, str]) -> str:
    if row["account_id"] is not None:
        return names.get(row["account_id"], row["email"] or f"account {row['account_id']}")
    if row["email_hash"] is not None:
        return "unknown address " + fingerprint(row["email_hash"])
    return "—"


@requires("security_event:read")
async def security(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    oversight = request.config_dict[OVERSIGHT]
    accounts = await oversight.staff_accounts(staff)
    names = {a.id: f"{a.name} <{a.email}>" for a in accounts}
    try:
        where, shown = _parse(request.query, oversight, {a.email: a.id for a in accounts})
        before = filters.cursor(request.query)
    except filters.BadFilter as bad:
        everything = {"href": "/admin/security", "text": "Show every event"}
        return message(request, 400, "Bad filter", str(bad), link=everything)
    page = await oversight.security_events(staff, where, before)
    rows = [{**row, "who": _who(row, names), "changes": changes(row["detail"])}
            for row in page.rows]  # fmt: skip
    next_url = filters.next_page("/admin/security", shown, page.next_before)
    return render(request, "admin/security.html", title="Security events", rows=rows,
                  filters=shown, kinds=KINDS, next_url=next_url)  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/security", security, name="admin_security")

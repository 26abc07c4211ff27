"""The audit log page: who did what, newest first, with filters and keyset pages; before/after
values as a small table; the "verify the chain" button (ASVS 4.0.3 V7.3.3, issue #12).

`audit:read` both to read and to check the chain (a check changes nothing; it is a POST so
that a link or a prefetch cannot start a walk of the whole log).
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from license_server.db.audit_search import AuditFilter
from license_server.licensing.actors import ActorKind
from license_server.staff.accounts import SignedIn
from license_server.web.admin import filters
from license_server.web.admin.base import OVERSIGHT, message, read_form, render, requires

_ACTION = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.?$")


def _actor(text: str, staff_ids: dict[str, int]) -> tuple[str | None, str | None]:
    """ "staff:3", "cli", "api:key-id", or a staff e-mail address -> (kind, id)."""
    if not text:
        return None, None
    if "@" in text:
        account_id = staff_ids.get(text.lower())
        if account_id is None:
            raise filters.BadFilter("actor: no member of staff has this e-mail address")
        return ActorKind.STAFF.value, str(account_id)
    kind, _, actor_id = text.partition(":")
    if kind not in {k.value for k in ActorKind}:
        kinds = ", ".join(k.value for k in ActorKind)
        raise filters.BadFilter(f"actor: a staff e-mail address, or one of {kinds} (with :id)")
    return kind, actor_id or None


def _parse(query, staff_ids: dict[str, int]) -> tuple[AuditFilter, dict[str, str]]:
    shown = {name: filters.text(query, name) for name in ("actor", "action", "target")}
    shown["from"] = filters.text(query, "from", 10)
    shown["to"] = filters.text(query, "to", 10)
    if shown["action"] and not _ACTION.match(shown["action"]):
        raise filters.BadFilter("action: like license.suspend, or license. for all of them")
    kind, actor_id = _actor(shown["actor"], staff_ids)
    since, until = filters.day(query, "from"), filters.day(query, "to", end=True)
    if since is not None and until is not None and since >= until:
        raise filters.BadFilter("from: a day before to")
    where = AuditFilter(
        actor_kind=kind, actor_id=actor_id, action=shown["action"] or None,
        target=shown["target"] or None, since=since, until=until,
    )  # fmt: skip
    return where, shown


def _value(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def changes(detail_text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """A row's detail as ("diff", [(field, before, after)]) when it holds before/after
    values, else ("fields", [(field, value, "")]); text that is not a JSON object as one
    field. Only changed fields appear in a diff."""
    try:
        detail = json.loads(detail_text)
    except ValueError:
        return "fields", [("detail", detail_text, "")]
    if not isinstance(detail, dict):
        return "fields", [("detail", _value(detail), "")]
    before, after = detail.get("before"), detail.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        before = before if isinstance(before, dict) else {}
        after = after if isinstance(after, dict) else {}
        rows = [
            (name, _value(before[name]) if name in before else "—",
             _value(after[name]) if name in after else "—")
            for name in sorted(before.keys() | after.keys())
            if before.get(name, ...) != after.get(name, ...)
        ]  # fmt: skip
        rest = {k: v for k, v in detail.items() if k not in ("before", "after")}
        rows += [(name, "", _value(value)) for name, value in sorted(rest.items())]
        return "diff", rows
    return "fields", [(name, _value(value), "") for name, value in sorted(detail.items())]


def _actor_text(row: dict, names: dict[int, str]) -> str:
    if row["actor_kind"] == ActorKind.STAFF.value and row["actor_id"].isdigit():
        name = names.get(int(row["actor_id"]))
        if name:
            return name
    return f"{row['actor_kind']}:{row['actor_id']}" if row["actor_id"] else row["actor_kind"]


async def _page(request: web.Request, staff: SignedIn, **extra) -> web.Response:
    oversight = request.config_dict[OVERSIGHT]
    accounts = await oversight.staff_accounts(staff)
    names = {a.id: f"{a.name} <{a.email}>" for a in accounts}
    staff_ids = {a.email: a.id for a in accounts}
    try:
        where, shown = _parse(request.query, staff_ids)
        before = filters.cursor(request.query)
    except filters.BadFilter as bad:
        everything = {"href": "/admin/audit", "text": "Show the whole audit log"}
        return message(request, 400, "Bad filter", str(bad), link=everything)
    page = await oversight.audit_page(staff, where, before)
    rows = [
        {**row, "actor_text": _actor_text(row, names), "changes": changes(row["detail"])}
        for row in page.rows
    ]
    return render(request, "admin/audit.html", title="Audit log", rows=rows, filters=shown,
                  next_url=filters.next_page("/admin/audit", shown, page.next_before),
                  **{"check": None, **extra})  # fmt: skip


@requires("audit:read")
async def audit(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _page(request, staff)


@requires("audit:read")
async def verify_chain(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    result = await request.config_dict[OVERSIGHT].check_chain(staff)
    return await _page(request, staff, check=result)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/audit", audit, name="admin_audit")
    router.add_post("/audit/verify", verify_chain, name="admin_audit_verify")

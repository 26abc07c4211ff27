"""`/api/v1/bans`: list, add and lift bans of domains and IPs / ranges.

A ban is parsed and written by `licensing/bans.BanList`, as the admin and `run.py ban` do: the
verifier's domain normaliser, the IP / CIDR rules, a plain-text reason; the service's single
write path with the API key as the actor and the admin's audit row (before / after) in the same
transaction (staff/log_desk.ban_audit). It is in force at the next check. Adding a value that
is banned already is a 409 naming the ban (the admin's form replaces the reason instead; an
API create that silently changed an existing record would hide a mistake).
"""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys
from license_server.db import bans as ban_rows
from license_server.licensing.service import Conflict
from license_server.staff.log_desk import ban_audit
from license_server.web.api.licenses import MAX_ID, decode_cursor, encode_cursor
from license_server.web.api.models import BanIn, BanOut, BanPage, PageQuery, iso
from license_server.web.api.problems import conflict, field_error, invalid, not_found
from license_server.web.api.registry import Call, json_answer


def _ban(row: dict) -> BanOut:
    return BanOut(
        id=row["id"], kind=row["kind"], value=row["value"], reason=row["reason"],
        created_at=iso(row["created_at"]), created_by=row["created_by"] or "",
    )  # fmt: skip


async def list_bans(call: Call) -> web.Response:
    query: PageQuery = call.query
    before = None if query.cursor is None else decode_cursor(query.cursor)
    async with call.service.db.read() as conn:
        rows = await ban_rows.ban_page(conn, before_id=before, limit=query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return json_answer(
        BanPage(
            items=[_ban(row) for row in rows],
            next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
        )
    )


async def add_ban(call: Call) -> web.Response:
    body: BanIn = call.body
    bans = call.request.config_dict[appkeys.RUNTIME].bans
    audit = ban_audit(call.service.audit, call.key.actor, "ban.add")

    async def only_new(writes, before: dict | None, after: dict | None) -> None:
        if before is not None:  # raised inside the transaction: nothing is written
            raise Conflict(f"{before['kind']} {before['value']} is banned already")
        await audit(writes, before, after)

    try:
        value = await bans.ban(body.kind, body.value, body.reason, actor=call.key.actor,
                               also=only_new)  # fmt: skip
    except Conflict as exc:
        raise conflict(str(exc)) from None
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        if name != "reason":
            name, message = "value", str(exc)
        raise invalid("body", [field_error("body", name, message)]) from None
    async with call.service.db.read() as conn:
        row = await ban_rows.ban_by_value(conn, body.kind, value)
    if row is None:  # lifted in between
        raise not_found("the ban was lifted meanwhile")
    return json_answer(_ban(row), 201, {"Location": f"/api/v1/bans/{row['id']}"})


async def lift_ban(call: Call) -> web.Response:
    text = call.request.match_info["id"]
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise not_found(f"no ban with id {text[:20]}")
    async with call.service.db.read() as conn:
        row = await ban_rows.ban_by_id(conn, int(text))
    bans = call.request.config_dict[appkeys.RUNTIME].bans
    audit = ban_audit(call.service.audit, call.key.actor, "ban.lift")
    if row is None or not await bans.unban(
        row["kind"], row["value"], actor=call.key.actor, also=audit
    ):
        raise not_found(f"no ban with id {text}")
    return web.Response(status=204)

"""`/api/v1/alerts`: the alerts staff see in the admin (issue #15), for the vendor's own tools.

The list takes the admin page's filters (state, detector, severity, license, a time range) and
is keyset-paginated by id, newest first, with an opaque cursor (the licenses list's scheme).
Acknowledge and resolve are `licensing/alerts.change_state`, as the admin's buttons: the API key
is the actor on the row and in the audit row written in the same transaction. Scopes:
`alert:read`, and `alert:acknowledge` for both changes (staff/alert_desk.py says why).
"""

from __future__ import annotations

from aiohttp import web

from license_server.db import alerts as alert_rows
from license_server.licensing.alerts import (
    AlertNotFound,
    AlertState,
    StateRefused,
    change_state,
    evidence_of,
)
from license_server.web.api.licenses import MAX_ID, decode_cursor, encode_cursor
from license_server.web.api.models import AlertOut, AlertPage, AlertQuery, iso
from license_server.web.api.problems import conflict, field_error, invalid, not_found
from license_server.web.api.registry import Call, json_answer

_CURSOR_PREFIX = b"alr1:"
_STATES: dict[str, tuple[str, ...] | None] = {
    "unresolved": ("open", "acknowledged"),
    "open": ("open",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": None,
}


def _ms(at_ms: int | None) -> str | None:
    if at_ms is None:
        return None
    seconds, millis = divmod(at_ms, 1000)
    return f"{iso(seconds)[:-1]}.{millis:03d}Z"


def alert_out(row: dict) -> AlertOut:
    return AlertOut(
        id=row["id"], detector=row["detector"], subject=row["subject"],
        severity=row["severity"], summary=row["summary"], evidence=evidence_of(row),
        license_id=row["license_id"], state=row["state"], occurrences=row["occurrences"],
        first_seen=_ms(row["first_seen_ms"]), last_seen=_ms(row["last_seen_ms"]),
        state_changed_at=_ms(row["state_changed_ms"]),
        state_changed_by=row["state_changed_by"] or "",
    )  # fmt: skip


async def list_alerts(call: Call) -> web.Response:
    query: AlertQuery = call.query
    since = None if query.since is None else int(query.since.timestamp() * 1000)
    until = None if query.until is None else int(query.until.timestamp() * 1000)
    if since is not None and until is not None and since >= until:
        raise invalid("query", [field_error("query", "since", "must be before until")])
    where = alert_rows.AlertFilter(
        states=_STATES[query.state], detector=query.detector, severity=query.severity,
        license_id=query.license, since_ms=since, until_ms=until,
    )  # fmt: skip
    before = None if query.cursor is None else decode_cursor(query.cursor, _CURSOR_PREFIX)
    async with call.service.db.read() as conn:
        rows = await alert_rows.alert_page(conn, where, before, query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return json_answer(
        AlertPage(
            items=[alert_out(row) for row in rows],
            next_cursor=encode_cursor(rows[-1]["id"], _CURSOR_PREFIX) if more else None,
        )
    )


def _alert_id(call: Call) -> int:
    text = call.request.match_info["id"]
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise not_found(f"no alert with id {text[:20]}")
    return int(text)


async def get_alert(call: Call) -> web.Response:
    alert_id = _alert_id(call)
    async with call.service.db.read() as conn:
        row = await alert_rows.get(conn, alert_id)
    if row is None:
        raise not_found(f"no alert with id {alert_id}")
    return json_answer(alert_out(row))


async def _change(call: Call, state: AlertState) -> web.Response:
    alert_id = _alert_id(call)
    try:
        row = await change_state(call.service, call.key.actor, alert_id, state)
    except AlertNotFound:
        raise not_found(f"no alert with id {alert_id}") from None
    except StateRefused as refused:
        raise conflict(str(refused)) from None
    return json_answer(alert_out(row))


async def acknowledge(call: Call) -> web.Response:
    return await _change(call, AlertState.ACKNOWLEDGED)


async def resolve(call: Call) -> web.Response:
    return await _change(call, AlertState.RESOLVED)

"""`GET /api/v1/attempts`: the verification attempt log, filtered, newest first, in cursor pages.

The filters are the admin's (staff/log_desk.py `AttemptFilter`: a result from the closed list, a
domain through the verifier's normaliser, an address or an octet-aligned IPv4 range), the
query is `db/attempts.attempt_page`, the admin's keyset page on (at_ms, id): every filter is
one index range however long the log is. The cursor carries the (at_ms, id) of the last row
shown, so the next page needs no extra read, and rows logged meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re

from aiohttp import web

from license_server.db import attempts as attempt_rows
from license_server.staff.log_desk import AttemptFilter
from license_server.web.api.models import AttemptOut, AttemptPage, AttemptQuery, iso
from license_server.web.api.problems import field_error, invalid
from license_server.web.api.registry import Call, json_answer

_CURSOR = re.compile(r"att1:([0-9]{1,19}):([0-9]{1,19})")
# The API's names for the admin filter's fields (the rest are the same).
_FILTER_FIELDS = ("license", "result", "reason", "product", "ip", "domain")


def encode_cursor(at_ms: int, attempt_id: int) -> str:
    return base64.urlsafe_b64encode(f"att1:{at_ms}:{attempt_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None or max(int(match.group(1)), int(match.group(2))) > 2**63 - 1:
        raise invalid("query", [field_error("query", "cursor", "not a cursor of this list")])
    return int(match.group(1)), int(match.group(2))


def _filter(query: AttemptQuery) -> AttemptFilter:
    fields = {name: str(getattr(query, name)) for name in _FILTER_FIELDS
              if getattr(query, name) is not None}  # fmt: skip
    try:
        where = AttemptFilter.parse(fields)
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        raise invalid("query", [field_error("query", name, message or name)]) from None
    since = None if query.since is None else int(query.since.timestamp() * 1000)
    until = None if query.until is None else int(query.until.timestamp() * 1000)
    if since is not None and until is not None and since >= until:
        raise invalid("query", [field_error("query", "since", "must be before until")])
    return dataclasses.replace(where, since_ms=since, until_ms=until)


async def list_attempts(call: Call) -> web.Response:
    query: AttemptQuery = call.query
    where = _filter(query)
    after = None if query.cursor is None else decode_cursor(query.cursor)
    async with call.service.db.read() as conn:
        rows = await attempt_rows.attempt_page(
            conn, equal=where.equal, ip_ranges=where.ip_ranges, since_ms=where.since_ms,
            until_ms=where.until_ms, after=after, limit=query.limit + 1,
        )  # fmt: skip
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return json_answer(
        AttemptPage(
            items=[_attempt(row) for row in rows],
            next_cursor=encode_cursor(rows[-1]["at_ms"], rows[-1]["id"]) if more else None,
        )
    )


def _attempt(row: dict) -> AttemptOut:
    at_ms = row["at_ms"]
    seconds, millis = divmod(at_ms, 1000)
    at = f"{iso(seconds)[:-1]}.{millis:03d}Z"
    return AttemptOut(at=at, **{k: v for k, v in row.items() if k != "at_ms"})

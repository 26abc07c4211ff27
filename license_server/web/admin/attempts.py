"""The attempt log page (issue #12): every verification attempt, newest first, filtered by result,
reason, product, source address or IPv4 range, domain, license and UTC time range; keyset pages;
a CSV export of the same filter.

Everything shown here was sent by whoever phoned home (User-Agent, domain, directory): the
template autoescapes it and cuts long values (ASVS 4.0.3 V5.3.1), and the export writes every
cell so that a spreadsheet cannot take it for a formula (V5.3.4 in spirit: CSV injection,
OWASP "CSV Injection"). A filter that cannot be read is a 400 page naming the field, never a 500.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections import defaultdict

from aiohttp import web

from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.log_desk import RESULTS, AttemptFilter, LogDesk
from license_server.web.admin.base import _headers, client_ip, message, render, requires

# The attempt log's and the bans' service (staff/log_desk.py), made in `staff_ctx`.
LOG_DESK = web.AppKey("staff_log_desk", LogDesk)

FILTERS = ("result", "reason", "product", "ip", "domain", "license", "from", "to")
MAX_VALUE = 300  # characters in one filter field; anything longer is no filter of ours
EXPORT_COLUMNS = (
    "id", "at_utc", "endpoint", "source_ip", "reported_ip", "domain", "domain_raw", "directory",
    "license_id", "product", "result", "reason", "client_version", "user_agent", "latency_us",
)  # fmt: skip


def read_query(request: web.Request) -> tuple[dict[str, str], int | None]:
    """The filter fields and the page cursor; HTTPBadRequest (a 400 page) when a field is
    repeated, too long or the cursor is not an id."""
    query = request.query
    fields = {}
    for name in (*FILTERS, "before"):
        values = query.getall(name, [])
        if len(values) > 1:
            raise web.HTTPBadRequest(text=f"{name}: given more than once")
        if values and len(values[0]) > MAX_VALUE:
            raise web.HTTPBadRequest(text=f"{name}: at most {MAX_VALUE} characters")
        if values:
            fields[name] = values[0]
    return fields, cursor(fields.pop("before", ""))


def cursor(text: str) -> int | None:
    """A keyset page's `before` (a row id), None for the first page; HTTPBadRequest if it is
    not one."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise web.HTTPBadRequest(text="before: not a row id")
    return int(text)


def _filter(request: web.Request, fields: dict[str, str]) -> AttemptFilter:
    try:
        return AttemptFilter.parse(fields)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


@requires("attempt:read")
async def attempts(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    try:
        fields, before = read_query(request)
        where = _filter(request, fields)
    except web.HTTPBadRequest as bad:
        return message(request, 400, "Bad filter", bad.text or "The filter could not be read.",
                       link={"href": "/admin/attempts", "text": "Show every attempt"})  # fmt: skip
    desk = request.config_dict[LOG_DESK]
    page = await desk.attempts(staff, where, before)
    for row in page.rows:
        row["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["at_ms"] // 1000))
    role = staff.account.role
    # The page's own query without the cursor: the next page's link and the export's.
    kept = {name: value for name, value in fields.items() if value}
    return render(
        request, "admin/attempts.html", title="Attempt log", rows=page.rows,
        next_before=page.next_before, form=defaultdict(str, kept), kept=kept, results=RESULTS,
        products=await desk.products(staff),
        may_export=rbac.has_permission(role, "attempt:export"),
        may_ban=rbac.has_permission(role, "ban:create"),
    )  # fmt: skip


def safe_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: one that would start a formula (= + - @, or a
    tab / carriage return before one) gets a leading apostrophe (OWASP "CSV Injection")."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_line(row: dict) -> list[object]:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["at_ms"] // 1000))
    values = {**row, "at_utc": f"{at}.{row['at_ms'] % 1000:03d}"}
    return [safe_cell(values[name]) for name in EXPORT_COLUMNS]


@requires("attempt:export")
async def export(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    try:
        fields, _ = read_query(request)
        where = _filter(request, fields)
    except web.HTTPBadRequest as bad:
        return message(request, 400, "Bad filter", bad.text or "The filter could not be read.")
    pages = await request.config_dict[LOG_DESK].export(staff, where, client_ip(request))
    headers = _headers(secrets.token_urlsafe(16))
    headers["Content-Disposition"] = 'attachment; filename="attempts.csv"'
    response = web.StreamResponse(headers=headers)
    response.content_type = "text/csv"
    response.charset = "utf-8"
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    async for rows in pages:
        writer.writerows(_csv_line(row) for row in rows)
        await response.write(buffer.getvalue().encode("utf-8"))
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        await response.write(buffer.getvalue().encode("utf-8"))
    await response.write_eof()
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/attempts", attempts, name="admin_attempts")
    router.add_get("/attempts.csv", export, name="admin_attempts_csv")

"""CSV of the license list (`/admin/licenses.csv`, the list's filters) and of bulk-issued keys.

The export is streamed: the rows come from the database a keyset page at a time
(staff/license_list.py) and go out as they are formatted, so 1,000,000 licenses never sit in
memory. It holds no license key, only each key's hint (its prefix and last 4: log_masking.py),
and is audited as an export. Every text cell that a spreadsheet would take for a formula (one
starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'`, as OWASP's
"CSV Injection" page advises: licensee names and e-mails are typed by customers and staff.
"""

from __future__ import annotations

import base64
import csv
import io
import time
from collections.abc import Iterable, Sequence

from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.specs import LicenseSpec
from license_server.staff.accounts import SignedIn
from license_server.staff.license_list import LicenseList, ListQuery
from license_server.web.admin.base import (
    date_text,
    datetime_text,
    form_problems,
    message,
    requires,
    security_headers,
)  # fmt: skip

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
LIST_COLUMNS = ("id", "product", "status", "licensee", "company", "email", "key_hint",
                "seats", "expires", "created")  # fmt: skip
ISSUED_COLUMNS = ("id", "key", "product", "licensee", "email", "expires")


class BadQuery(ValueError):
    """The list's query string cannot be read; the message is one line."""


def license_list(request: web.Request) -> LicenseList:
    return LicenseList(request.config_dict[appkeys.RUNTIME].licenses)


def list_query(request: web.Request) -> ListQuery:
    """The list's filters (the page's and the CSV's): each field at most once, validated."""
    query = request.query
    if any(len(query.getall(name)) > 1 for name in query):
        raise BadQuery("each filter may be given once")
    try:
        return ListQuery.model_validate({name: query[name] for name in query})
    except ValidationError as exc:
        raise BadQuery("; ".join(form_problems(exc))) from None


def csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text, never runs (CSV/formula injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_lines(rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return out.getvalue()


def _list_row(row: dict) -> tuple[object, ...]:
    return (row["id"], row["product"], row["status"], row["licensee_name"], row["company"],
            row["licensee_email"], row["key_hint"], row["seats"], date_text(row["expires_at"]),
            datetime_text(row["created_at"]))  # fmt: skip


@requires("license:read")
async def export_csv(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    try:
        query = list_query(request)
        pages = await license_list(request).export(staff, query)
    except ValueError as exc:  # read and checked before the first byte goes out
        back = {"href": "/admin/licenses", "text": "Back to the licenses"}
        return message(request, 400, "Bad export", str(exc), link=back)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    response = web.StreamResponse(headers={
        **security_headers(),
        "Content-Type": "text/csv; charset=utf-8; header=present",
        "Content-Disposition": f'attachment; filename="licenses-{stamp}.csv"',
    })  # fmt: skip
    await response.prepare(request)
    await response.write(csv_lines([LIST_COLUMNS]).encode())
    async for rows in pages:
        await response.write(csv_lines(_list_row(row) for row in rows).encode())
    await response.write_eof()
    return response


def issued_keys_csv(spec: LicenseSpec, issued: Sequence[tuple[int, str]]) -> str:
    """The bulk-issued keys as a CSV inside a `data:` URL, for a download link on the page
    that shows them: the keys leave the server in that one answer and never again."""
    expires = spec.expires.isoformat() if spec.expires else "never"
    text = csv_lines([ISSUED_COLUMNS, *((license_id, key, spec.product, spec.licensee,
                      str(spec.email), expires) for license_id, key in issued)])  # fmt: skip
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()

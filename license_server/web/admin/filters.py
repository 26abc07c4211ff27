"""Reading the filter fields of a list page's query string, strictly (ASVS 4.0.3 V5.1.3, V5.1.4).

Each field at most once, bounded in length, printable text only; dates as YYYY-MM-DD (UTC
days); a page cursor as a positive 64-bit integer. Anything else raises `BadFilter`, which
the page answers with a 400 and a message, never a 500 nor a silently ignored filter.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from multidict import MultiMapping

MAX_FILTER_CHARS = 200


class BadFilter(ValueError):
    """A filter value that cannot be used; the message says which and why."""


def text(query: MultiMapping[str], name: str, limit: int = MAX_FILTER_CHARS) -> str:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadFilter(f"{name}: give it once")
    value = values[0] if values else ""
    if len(value) > limit + 20:  # some room for spaces around it, stripped below
        raise BadFilter(f"{name}: at most {limit} characters")
    if not value.isprintable():  # checked before stripping: a CR LF at either end too
        raise BadFilter(f"{name}: printable text only")
    if "\N{REPLACEMENT CHARACTER}" in value:  # what the query parser makes of bad UTF-8
        raise BadFilter(f"{name}: not UTF-8 text")
    value = value.strip()
    if len(value) > limit:
        raise BadFilter(f"{name}: at most {limit} characters")
    return value


def day(query: MultiMapping[str], name: str, *, end: bool = False) -> int | None:
    """A YYYY-MM-DD day as epoch seconds at its start (UTC), or the next day's start with
    `end` (so that "to 2026-01-31" includes all of that day)."""
    value = text(query, name, 10)
    if not value:
        return None
    try:
        parsed = time.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise BadFilter(f"{name}: a date like 2026-01-31") from None
    start = calendar.timegm(parsed)
    return start + 86400 if end else start


def cursor(query: MultiMapping[str]) -> int | None:
    value = text(query, "before", 20)
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) < 2**63:
        raise BadFilter("before: not a page of this list")
    return int(value)


def next_page(path: str, shown: Mapping[str, str], before: int | None) -> str | None:
    """The link to the next page, keeping the filters."""
    if before is None:
        return None
    fields = {name: value for name, value in shown.items() if value}
    return f"{path}?{urlencode({**fields, 'before': before})}"

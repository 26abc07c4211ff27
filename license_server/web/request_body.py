"""Reading the body of a verification request into fields, refusing what is malformed.

Both verify endpoints read their fields here (ASVS 4.0.3 V5.1.1 parameter pollution, V5.1.3
input validation, V13.1.3 request size; RFC 9457 for the refusals): a body is read within a
time limit (a stalled upload is cut off instead of holding a connection and a task forever),
decoded strictly as UTF-8, and parsed by format:

- JSON: an object of fields; deep nesting, integers too long to convert, duplicate names and
  text that is not UTF-8 are refused instead of surfacing as RecursionError / ValueError;
- urlencoded: split by hand so the caller chooses which fields keep a literal `+` (WHMCS
  modules post some keys unencoded); raw bytes that are not UTF-8 are refused, percent-encoded
  ones become U+FFFD;
- multipart: aiohttp's reader, with its errors (no boundary, a part without a name) refused.

Every refusal is `Malformed`, carrying the HTTP status and a short machine reason for the
attempt log; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Collection
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"


class Malformed(Exception):
    """A request that cannot be decided; becomes a 4xx problem document and a logged attempt."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        reason: str,
        *,
        errors: list[dict[str, str]] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.reason = reason  # for the attempt log: invalid_fields, bad_encoding, ...
        self.errors = errors or [{"field": "body", "message": detail}]
        self.fields = fields or {}  # what could be read, for the attempt log and the nonce


def bad_body(detail: str, reason: str = "bad_body") -> Malformed:
    return Malformed(400, "Malformed request body", detail, reason)


@contextlib.asynccontextmanager
async def _receiving(seconds: float) -> AsyncIterator[None]:
    """Receiving a body: too large (413), stalled (408) or cut off (400) becomes Malformed."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except _RECEIVE_ERRORS as exc:
        raise _receive_failed(exc, seconds) from None


# What receiving a body can raise for a client's fault: too large, stalled, or cut off (the
# client went away, or a chunked body ended early: aiohttp's payload errors).
_RECEIVE_ERRORS = (
    web.HTTPRequestEntityTooLarge,
    TimeoutError,
    ConnectionError,
    asyncio.IncompleteReadError,
    HttpProcessingError,
)


def _receive_failed(exc: BaseException, seconds: float) -> Malformed:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return Malformed(413, "Payload Too Large", exc.text or "", "http_413")
    if isinstance(exc, TimeoutError):
        return Malformed(
            408, "Request Timeout", f"The body did not arrive within {seconds:g} s.", "http_408"
        )
    return Malformed(400, "Incomplete body", "the body ended early", "client_gone")


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The whole body, or Malformed: too large (413), stalled (408), connection lost (400).

    A small body has usually arrived with its headers: then nothing can stall, and the timer
    (a loop callback scheduled and cancelled, and a context manager: measurable per check,
    issue #16) is not started.
    """
    try:
        if request.content.is_eof():
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except _RECEIVE_ERRORS as exc:
        raise _receive_failed(exc, seconds) from None


async def read_body_once(request: web.Request, seconds: float) -> bytes:
    """`read_body` for a handler that reads the body once and nothing after it reads it again
    (the verify endpoints): a body that has arrived is taken from the stream's buffer as it
    is (`read_nowait`: no read loop, no copy; issue #16), with `request.read()`'s size limit
    (413). `request.read()` would return b"" afterwards."""
    content = request.content
    if not content.is_eof():
        return await read_body(request, seconds)
    body = content.read_nowait()
    limit = request.client_max_size
    if limit and len(body) > limit:
        raise _receive_failed(web.HTTPRequestEntityTooLarge(limit), seconds)
    return body


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object of fields; duplicate names are refused (which one would count?)."""
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise bad_body("the body is not UTF-8", "bad_encoding") from None
    except RecursionError:
        raise bad_body("the JSON is nested too deeply", "too_deep") from None
    except _Duplicate as exc:
        raise bad_body(f"field {exc.name!r} is given more than once", "duplicate_field") from None
    except ValueError:  # JSONDecodeError, and integers past the digit limit
        raise bad_body("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_body("the body is not a JSON object")
    return data


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Duplicate(name[:64])
            seen.add(name)
    return fields


def parse_urlencoded(
    body: bytes,
    *,
    literal_plus: Collection[str] = (),
    max_value: int | None = None,
) -> dict[str, str]:
    """Fields of an urlencoded body (a trailing `&` is fine).

    `literal_plus` names fields decoded with `unquote` instead of `unquote_plus`, so that a
    value posted without encoding keeps its `+`. A field given twice is refused (which one
    would count? ASVS V5.1.1).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_body(
            "the body is not UTF-8 (percent-encode other bytes)", "bad_encoding"
        ) from None
    fields: dict[str, str] = {}
    # Without `%` or `+` nothing decodes to anything else (what a module sends, as a rule):
    # the pairs are taken as they are, twelve calls fewer per check (issue #16).
    plain = "%" not in text and "+" not in text
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if not plain:
            name = unquote(name.replace("+", " "))
            value = unquote(value) if name in literal_plus else unquote(value.replace("+", " "))
        if name in fields:
            raise bad_body(f"field {name[:64]!r} is given more than once", "duplicate_field")
        fields[name] = value if max_value is None else value[:max_value]
    return fields


async def read_multipart(request: web.Request, seconds: float) -> dict[str, str]:
    """Text fields of a multipart body; file parts are ignored."""
    try:
        async with _receiving(seconds):
            form = await request.post()
    except UnicodeDecodeError:
        raise bad_body("a multipart field is not UTF-8", "bad_encoding") from None
    except (ValueError, AssertionError, LookupError) as exc:
        # aiohttp: "boundary missed", "Multipart field missing name.", an unknown charset...
        raise bad_body(f"malformed multipart body: {str(exc)[:120]}", "bad_multipart") from None
    fields: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(value, str):
            continue
        if name in fields:
            raise bad_body(f"field {name[:64]!r} is given more than once", "duplicate_field")
        fields[name] = value
    return fields

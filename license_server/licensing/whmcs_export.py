"""Streaming reader for exports of the WHMCS Licensing Addon's ``mod_licensing`` table.

Operators moving off WHMCS hand us a dump of that table; this module turns it into
validated :class:`ExportRow` objects, or :class:`BadRow` for rows that cannot be used,
without ever holding the whole file in memory.  It only reads files: there is no
database access and no SQL is executed.

Accepted formats, detected from the content rather than from the file name:

* SQL dumps as written by ``mysqldump`` (all tuples of an INSERT on one long line) and
  by phpMyAdmin (optional column list, one tuple per line), including ``INSERT IGNORE``,
  ``REPLACE``, MySQL string escapes and comments; unrelated statements are skipped.
* CSV as written by phpMyAdmin, Excel or MySQL Workbench: ``,`` or ``;`` delimited,
  ``"``-quoted fields that may contain delimiters and newlines, optional header row.

Both layouts of the table are understood, with and without the newer ``addon_id``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

__all__ = ["BadRow", "ExportFormatError", "ExportRow", "read_export"]

STATUSES = ("Active", "Reissued", "Suspended", "Expired")
_STATUS_BY_LOWER = {s.lower(): s for s in STATUSES}
_COLUMNS_9 = ("id", "serviceid", "licensekey", "validdomain", "validip", "validdirectory")
_COLUMNS_9 += ("reissues", "status", "lastaccess")
_COLUMNS_10 = (*_COLUMNS_9[:2], "addon_id", *_COLUMNS_9[2:])
_REQUIRED = frozenset(_COLUMNS_9)

_CHUNK = 1 << 16  # bytes read from the file at a time
_SNIFF_BYTES = 1 << 16  # how much of the start decides between SQL and CSV
_LOOKAHEAD = 4096  # kept ahead of the cursor so statement heads are never cut in two
_MAX_TOKEN = 1 << 20  # a tuple or CSV record longer than this is given up on
_MAX_RECORD_LINES = 100  # a quoted CSV field spanning more lines is a stray quote
_PROGRESS_EVERY = 5000
_BOM = b"\xef\xbb\xbf"
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed; decompress it first"),
    (b"PK\x03\x04", "a ZIP archive or Excel workbook; export it as CSV"),
    (b"\xff\xfe", "UTF-16 text; export it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; export it as UTF-8"),
)


class ExportFormatError(ValueError):
    """The file is not a mod_licensing export at all (as opposed to having bad rows)."""


@dataclass(frozen=True)
class ExportRow:
    """One usable row of ``mod_licensing``; ``line`` is where it starts in the file."""

    line: int
    whmcs_id: int
    service_id: int
    license_key: str
    valid_domains: tuple[str, ...]
    valid_ips: tuple[str, ...]
    valid_directories: tuple[str, ...]
    reissues: int
    status: str
    last_access: datetime | None


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be imported; ``reason`` is one sentence for the operator."""

    line: int
    reason: str


def read_export(
    path: str | Path, on_progress: Callable[[int, int], None] | None = None
) -> Iterator[ExportRow | BadRow]:
    """Yield every row of the export at ``path`` in file order.

    ExportFormatError is raised before the first row is yielded when the file is not an
    export at all.  ``on_progress(bytes_done, total_bytes)`` is called every few
    thousand rows and once more, with ``bytes_done == total_bytes``, at the end.
    """
    path = Path(path)
    with path.open("rb") as f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(_SNIFF_BYTES)
        f.seek(0)
        try:
            reader = _SqlReader(f) if _is_sql(head) else _CsvReader(f)
            for count, item in enumerate(reader.rows(), 1):
                yield item
                if on_progress is not None and count % _PROGRESS_EVERY == 0:
                    on_progress(min(reader.offset, total), total)
        except ExportFormatError as exc:
            raise ExportFormatError(f"{path}: {exc}") from None
    if on_progress is not None:
        on_progress(total, total)


# --- validation shared by both formats -------------------------------------------


class _Invalid(Exception):
    """Why a row is unusable; becomes BadRow.reason."""


_UINT = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?")
_ZERO_DATES = frozenset({"", "0000-00-00", "0000-00-00 00:00:00"})


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _int(name: str, value: str | None) -> int:
    text = (value or "").strip()
    if _UINT.fullmatch(text):
        return int(text)
    if not text:
        raise _Invalid(f"{name} is empty")
    if text[0] == "-" and _UINT.fullmatch(text[1:]):
        raise _Invalid(f"{name} {text} is negative")
    raise _Invalid(f"{name} {_show(text)} is not an integer")


def _key(value: str | None) -> str:
    key = (value or "").strip()
    if not key:
        raise _Invalid("license key is empty")
    if len(key) > 255:
        raise _Invalid(f"license key is {len(key)} characters long, more than 255")
    if _CONTROL.search(key):
        raise _Invalid("license key contains control characters")
    return key


def _status(value: str | None) -> str:
    text = (value or "").strip()
    if text.lower() in _STATUS_BY_LOWER:
        return _STATUS_BY_LOWER[text.lower()]
    raise _Invalid(f"status {_show(text)} is not one of {', '.join(STATUSES)}")


def _when(value: str | None) -> datetime | None:
    text = (value or "").strip()
    if text in _ZERO_DATES:  # MySQL's zero date means "never accessed"
        return None
    if _DATE.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # well-formed but impossible, e.g. month 13
    raise _Invalid(f"lastaccess {_show(text)} is not a YYYY-MM-DD HH:MM:SS date")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part for part in (p.strip() for p in (value or "").split(",")) if part)


def _columns(count: int, layout: tuple[str, ...] | None) -> tuple[str, ...]:
    if layout is not None:
        if count == len(layout):
            return layout
        raise _Invalid(f"expected {len(layout)} columns, found {count}")
    if count in (9, 10):
        return _COLUMNS_9 if count == 9 else _COLUMNS_10
    raise _Invalid(f"expected 9 or 10 columns, found {count}")


def _missing(layout: tuple[str, ...]) -> str:
    return ", ".join(sorted(_REQUIRED - set(layout)))


def _to_row(line: int, v: dict[str, str | None]) -> ExportRow | BadRow:
    try:
        return ExportRow(
            line=line,
            whmcs_id=_int("id", v["id"]),
            service_id=_int("serviceid", v["serviceid"]),
            license_key=_key(v["licensekey"]),
            valid_domains=_split(v["validdomain"]),
            valid_ips=_split(v["validip"]),
            valid_directories=_split(v["validdirectory"]),
            reissues=_int("reissues", v["reissues"]),
            status=_status(v["status"]),
            last_access=_when(v["lastaccess"]),
        )
    except _Invalid as exc:
        return BadRow(line, str(exc))


# --- format detection --------------------------------------------------------------

_IDENT = rb"(?:`(?:[^`]++|``)++`|[\w$]++)"
_QNAME = rb"(?:" + _IDENT + rb"\s*+\.\s*+)?(" + _IDENT + rb")"
_INSERT_HEAD = re.compile(
    rb"(?:INSERT(?:\s++(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY))?(?:\s++IGNORE)?"
    rb"|REPLACE(?:\s++(?:LOW_PRIORITY|DELAYED))?)(?:\s++INTO)?\s++" + _QNAME,
    re.I,
)
_CREATE_HEAD = re.compile(
    rb"CREATE\s++(?:TEMPORARY\s++)?TABLE\s++(?:IF\s++NOT\s++EXISTS\s++)?" + _QNAME, re.I
)
_SQL_START = re.compile(
    rb"\s*(?:--|#|/\*|(?:INSERT|REPLACE|CREATE|DROP|SET|LOCK|USE|START|BEGIN)\b)", re.I
)


def _unquote(ident: bytes) -> str:
    name = ident.decode("utf-8", "replace")
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _is_ours(ident: bytes) -> bool:
    return _unquote(ident).lower() == "mod_licensing"


def _is_sql(head: bytes) -> bool:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise ExportFormatError(f"file is {what}")
    if b"\0" in head:
        raise ExportFormatError("file is binary, not a CSV or SQL export")
    head = head.removeprefix(_BOM)
    if not head.strip():
        raise ExportFormatError("file is empty")
    if _SQL_START.match(head):
        return True
    return any(_is_ours(m[1]) for m in _INSERT_HEAD.finditer(head))


# --- CSV ---------------------------------------------------------------------------

_Line = tuple[int, bytes | None]  # (line number, raw bytes or None when overlong)


class _CsvReader:
    """Reads CSV records from binary lines, so each record is decoded strictly alone."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0
        self._lineno = 0
        self._pushed: deque[_Line] = deque()  # lines handed back for re-reading

    def _next_line(self) -> _Line | None:
        if self._pushed:
            return self._pushed.popleft()
        raw = self._f.readline(_MAX_TOKEN)
        if not raw:
            return None
        self._lineno += 1
        self.offset += len(raw)
        if len(raw) == _MAX_TOKEN and not raw.endswith(b"\n"):
            # Drop the rest of an absurdly long line so memory use stays bounded.
            while more := self._f.readline(_MAX_TOKEN):
                self.offset += len(more)
                if more.endswith(b"\n"):
                    break
            return self._lineno, None
        return self._lineno, raw.removeprefix(_BOM) if self._lineno == 1 else raw

    def _unread(self, lines: list[_Line]) -> None:
        self._pushed.extendleft(reversed(lines))

    def _records(self) -> Iterator[tuple[int, list[_Line] | str]]:
        """Group lines into records: an odd number of quotes means a field goes on."""
        while (first := self._next_line()) is not None:
            start, raw = first
            if raw is None:
                yield start, f"line is longer than {_MAX_TOKEN} bytes"
                continue
            lines, quotes, size = [first], raw.count(b'"'), len(raw)
            while quotes % 2 and len(lines) < _MAX_RECORD_LINES and size < _MAX_TOKEN:
                nxt = self._next_line()
                if nxt is None or nxt[1] is None:
                    self._unread([nxt] if nxt else [])
                    break
                lines.append(nxt)
                quotes, size = quotes + nxt[1].count(b'"'), size + len(nxt[1])
            if quotes % 2:
                # Most likely a stray quote: blame this line, re-read the ones after it.
                self._unread(lines[1:])
                yield start, "quoted field is never closed"
            else:
                yield start, lines

    def rows(self) -> Iterator[ExportRow | BadRow]:
        layout: tuple[str, ...] | None = None
        delimiter, first, count = "", True, 0
        for start, record in self._records():
            try:
                if isinstance(record, str):
                    raise _Invalid(record)
                text = _decode_lines(record)
                if not text.strip():
                    continue
                delimiter = delimiter or _sniff_delimiter(text)
                cells = _parse_csv(text, delimiter)
                if first and any(c.strip().lower() == "licensekey" for c in cells):
                    layout = _header_layout(cells)
                    first = False
                    continue
                first = False
                columns = _columns(len(cells), layout)
            except _Invalid as exc:
                if not isinstance(record, str) and len(record) > 1:
                    self._unread(record[1:])  # a multi-line record that is broken
                count += 1
                yield BadRow(start, str(exc))
                continue
            count += 1
            values = [None if c.strip() == "NULL" else c for c in cells]
            yield _to_row(start, dict(zip(columns, values, strict=True)))
        if not count:
            raise ExportFormatError("CSV file has no data rows")


def _decode_lines(lines: list[_Line]) -> str:
    parts = []
    for number, raw in lines:
        try:
            parts.append((raw or b"").decode("utf-8"))
        except UnicodeDecodeError:
            raise _Invalid(f"line {number} is not valid UTF-8") from None
    return "".join(parts)


def _sniff_delimiter(text: str) -> str:
    outside_quotes = re.sub(r'"[^"]*"', "", text)
    return ";" if outside_quotes.count(";") > outside_quotes.count(",") else ","


def _parse_csv(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        # csv's messages carry advice about newline modes that does not apply here.
        raise _Invalid(f"malformed CSV: {str(exc).split(' - ')[0]}") from None


def _header_layout(cells: list[str]) -> tuple[str, ...]:
    layout = tuple(c.strip().lower() for c in cells)
    if missing := _missing(layout):
        raise ExportFormatError(f"CSV header lacks required columns: {missing}")
    return layout


# --- SQL ---------------------------------------------------------------------------

_SQ = rb"'(?:[^'\\]++|\\.|'')*+'"
_DQ = rb'"(?:[^"\\]++|\\.|"")*+"'
_BT = rb"`(?:[^`]++|``)*+`"
_BARE = rb"[^\s,()'\"`;]++"
_VAL = rb"(?:" + _SQ + b"|" + _DQ + b"|" + _BARE + rb")"
_TUPLE = re.compile(rb"\(\s*+(?:" + _VAL + rb"(?:\s*+,\s*+" + _VAL + rb")*+)?\s*+\)", re.S)
_VALUE = re.compile(r"'((?:[^'\\]++|\\.|'')*+)'|\"((?:[^\"\\]++|\\.|\"\")*+)\"|([^\s,()]++)", re.S)
_WS = re.compile(rb"(?:\s++|--(?:[ \t\r][^\n]*+)?(?:\n|\Z)|#[^\n]*+|/\*.*?\*/)*+", re.S)
_SEP = re.compile(rb"\s*+([,;]?)\s*+")
_VALUES_HEAD = re.compile(
    rb"\s*+(?:\(\s*+(" + _IDENT + rb"(?:\s*+,\s*+" + _IDENT + rb")*+)\s*+\)\s*+)?VALUES?\b\s*+",
    re.I,
)
_STATEMENT = re.compile(rb"(?:[^;'\"`]++|" + _SQ + b"|" + _DQ + b"|" + _BT + rb")*+;", re.S)
_CREATE_TOKEN = re.compile(_SQ + b"|" + _DQ + b"|" + _BT + rb"|[\w$]+|\S", re.S)
_NOT_COLUMNS = frozenset(
    {"PRIMARY", "KEY", "UNIQUE", "INDEX", "CONSTRAINT", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK"}
)
# Anything up to the next ';' outside strings and comments.  A quote or comment start
# that cannot be completed within the buffer stops the match so more can be read.
_SKIP = re.compile(
    rb"(?:[^;'\"`#/\-]++|" + _SQ + b"|" + _DQ + b"|" + _BT + rb"|/\*.*?\*/"
    rb"|--(?:[ \t\r][^\n]*+)?\n|#[^\n]*+\n|-(?=[^-])|--(?=\S)|/(?=[^*]))*+",
    re.S,
)
# Where to pick up again after a broken tuple: the next tuple (a ',' before a '('),
# the end of the statement, or a line that starts a new statement.
_RESYNC = re.compile(
    rb"(,\s{0,16})(?=\()|\)\s{0,16};|;[ \t\r]*\n"
    rb"|\n(?=(?:INSERT|REPLACE|CREATE|DROP|LOCK|UNLOCK|SET)\b|/\*!|--\s)",
    re.I,
)
_ON_DUPLICATE = re.compile(rb"ON\s++DUPLICATE\b", re.I)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_ESCAPES |= {"%": "\\%", "_": "\\_"}  # MySQL keeps the backslash before these two
_UNESCAPE = {q: re.compile(r"\\(.)|" + q + q, re.S) for q in ("'", '"')}


class _SqlReader:
    """A cursor over a sliding window of the file, matching regexes tuple by tuple."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self._buf, self._pos, self._base = f, b"", 0, 0
        self._eof, self.line = False, 1
        self._layout: tuple[str, ...] | None = None  # from CREATE TABLE, if seen
        self._refill()
        if self._buf.startswith(_BOM):
            self._pos = len(_BOM)

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _refill(self) -> bool:
        chunk = b"" if self._eof else self._f.read(_CHUNK)
        self._eof = not chunk
        self._buf, self._base = self._buf[self._pos :] + chunk, self._base + self._pos
        self._pos = 0
        return bool(chunk)

    def _advance(self, to: int) -> None:
        self.line += self._buf.count(b"\n", self._pos, to)
        self._pos = to

    def _match(self, rx: re.Pattern[bytes], grow: bool = True) -> re.Match[bytes] | None:
        while len(self._buf) - self._pos < _LOOKAHEAD and self._refill():
            pass
        while True:
            m = rx.match(self._buf, self._pos)
            cut = m.end() == len(self._buf) if m else grow
            if not (cut and len(self._buf) - self._pos < _MAX_TOKEN and self._refill()):
                return m

    def _consume(self, rx: re.Pattern[bytes]) -> bytes:
        """Advance over a pattern that always matches; return its group 1, if any."""
        m = self._match(rx)
        self._advance(m.end() if m else self._pos)
        return m[1] if m and rx.groups else b""

    def rows(self) -> Iterator[ExportRow | BadRow]:
        seen_insert = False
        while True:
            self._consume(_WS)
            if self._pos >= len(self._buf):
                break
            line = self.line
            if (m := self._match(_INSERT_HEAD, grow=False)) and _is_ours(m[1]):
                seen_insert = True
                self._advance(m.end())
                yield from self._insert(line)
            elif (m := self._match(_CREATE_HEAD, grow=False)) and _is_ours(m[1]):
                self._advance(m.end())
                self._create_table()
            else:
                self._skip_statement()
        if not seen_insert:
            raise ExportFormatError("SQL dump has no INSERT INTO mod_licensing")

    def _create_table(self) -> None:
        if (m := self._match(_STATEMENT)) is None:
            self._skip_statement()
            return
        depth, names, expect_name = 0, [], False
        for token in _CREATE_TOKEN.findall(m[0]):
            if token in (b"(", b")"):
                depth += 1 if token == b"(" else -1
                expect_name = depth == 1 and token == b"("
            elif depth == 1 and token == b",":
                expect_name = True
            elif expect_name:
                expect_name = False
                if token.upper().decode("ascii", "replace") not in _NOT_COLUMNS:
                    names.append(_unquote(token).lower())
        self._layout = tuple(names)
        self._advance(m.end())

    def _insert(self, line: int) -> Iterator[ExportRow | BadRow]:
        head = self._match(_VALUES_HEAD, grow=False)
        if head is None:
            self._skip_statement()
            yield BadRow(line, "INSERT INTO mod_licensing without VALUES is not supported")
            return
        layout = self._layout
        if head[1]:
            layout = tuple(_unquote(c).lower() for c in re.findall(_IDENT, head[1]))
        if layout is not None and (missing := _missing(layout)):
            self._skip_statement()
            yield BadRow(line, f"INSERT column list lacks {missing}; statement skipped")
            return
        self._advance(head.end())
        while True:
            line = self.line
            if (m := self._match(_TUPLE)) is None:
                yield BadRow(line, "malformed value tuple (unterminated string or stray text)")
            else:
                self._advance(m.end())
                yield _tuple_row(line, self._buf[m.start() + 1 : m.end() - 1], layout)
                sep = self._consume(_SEP)
                if sep == b",":
                    continue
                if sep == b";" or self._pos >= len(self._buf):
                    return
                if self._match(_ON_DUPLICATE, grow=False):
                    self._skip_statement()
                    return
                yield BadRow(self.line, "unexpected text after a value tuple")
            if not self._resync():
                return

    def _resync(self) -> bool:
        """Skip past a broken tuple; True if positioned on the next tuple's '('."""
        self._advance(self._pos + 1)
        while True:
            m = _RESYNC.search(self._buf, self._pos)
            if m and (self._eof or m.end() + 64 <= len(self._buf)):
                self._advance(m.end())
                return m[1] is not None
            if self._eof:
                self._advance(len(self._buf))
                return False
            # Keep a short tail: a separator may straddle the end of the window.
            self._advance(max(self._pos, len(self._buf) - 128))
            self._refill()

    def _skip_statement(self) -> None:
        while True:
            m = _SKIP.match(self._buf, self._pos)  # always matches, possibly empty
            self._advance(m.end() if m else self._pos)
            if self._pos == len(self._buf):
                if not self._refill():
                    return
            elif self._buf[self._pos] == ord(";"):
                self._advance(self._pos + 1)
                return
            elif len(self._buf) - self._pos >= _MAX_TOKEN or not self._refill():
                self._advance(self._pos + 1)  # unterminated quote/comment: take it literally


def _tuple_row(line: int, raw: bytes, layout: tuple[str, ...] | None) -> ExportRow | BadRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadRow(line, "row is not valid UTF-8")
    values = [_sql_value(m) for m in _VALUE.finditer(text)]
    try:
        columns = _columns(len(values), layout)
    except _Invalid as exc:
        return BadRow(line, str(exc))
    return _to_row(line, dict(zip(columns, values, strict=True)))


def _sql_value(m: re.Match[str]) -> str | None:
    if m[3] is not None:
        return None if m[3].upper() == "NULL" else m[3]
    quote, body = ("'", m[1]) if m[1] is not None else ('"', m[2])
    if "\\" not in body and quote * 2 not in body:
        return body
    return _UNESCAPE[quote].sub(lambda e: quote if e[1] is None else _ESCAPES.get(e[1], e[1]), body)

"""License keys and e-mail addresses masked wherever the server writes a log line.

Seed 003 ("PII masking in logs"), ASVS 4.0.3 V7.1.1 (no credentials or payment details in
logs; a license key is a credential) and V8.3.4 (sensitive data is identified and handled by a
policy: here, a key and a licensee's address never reach a log in full). Two layers:

- Masking functions, one definition of what of a key or address may be shown: a key keeps its
  readable product prefix and its last 4 characters (`ACME-...WXYZ`), enough for support to tell
  two keys apart with the customer on the phone; an address keeps its first character and its
  domain (`o...@smith.example`). The CSV export uses the same `mask_key`.
- `PiiFilter`, put on every handler of the root logger by `install()` (run.py does it before
  anything logs): whatever a log record says, its message, arguments and traceback, is passed
  through `mask_text` first. So an exception that quotes its input (pydantic's errors repeat
  the value; a driver's error may repeat a row), aiohttp's "bad request line" warnings (which
  quote the query string) and every future `log.*` call are covered without each caller
  having to remember. The access log does not go through `logging` (web/access_log.py, for
  speed) and masks its path itself; it never writes query strings.

What `mask_text` recognises: our signed keys (`PREFIX-` and 100-130 base32 characters) and
e-mail addresses (`@` or its URL encoding `%40`). A legacy key imported from WHMCS is a random
string with no shape to find in free text: code that handles one logs only `mask_key(key)`.
"""

from __future__ import annotations

import logging
import re

_SIGNED_KEY = re.compile(r"\b([A-Za-z0-9]{1,12})-([A-Za-z0-9]{100,130})\b")
_EMAIL = re.compile(
    # The usual local-part characters only: `/`, `=`, `?` and `&` end it, so a query string
    # (`?q=ops@...`) keeps its name and only the address is masked.
    r"([A-Za-z0-9_+-])[A-Za-z0-9._+-]*"
    r"(@|%40)([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+)"
)
_LEGACY_TAIL_MIN = 16  # a shorter legacy key shows no tail: 4 of 10 characters is too many


def mask_key(key: str) -> str:
    """`PREFIX-...WXYZ` for a key with a prefix; `...WXYZ` for a long one without; `...` else."""
    key = key.strip()
    prefix, dash, body = key.partition("-")
    if dash and 0 < len(prefix) <= 12 and len(body) >= _LEGACY_TAIL_MIN:
        return f"{prefix}-...{body[-4:]}"
    if len(key) >= _LEGACY_TAIL_MIN:
        return f"...{key[-4:]}"
    return "..."


def mask_email(address: str) -> str:
    """`o...@smith.example`; an address without `@` keeps only its first character."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return f"{address.strip()[:1]}..."
    return f"{local[:1]}...@{domain}"


def mask_text(text: str) -> str:
    """`text` with every signed key and e-mail address in it masked."""
    if "-" in text:
        text = _SIGNED_KEY.sub(lambda m: f"{m.group(1)}-...{m.group(2)[-4:]}", text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)}...{m.group(2)}{m.group(3)}", text)
    return text


class PiiFilter(logging.Filter):
    """Masks a record's message and traceback in place (so every handler sees the masked
    text); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging's own error report
            return True
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put one `PiiFilter` on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, PiiFilter) for f in handler.filters):
            handler.addFilter(PiiFilter())

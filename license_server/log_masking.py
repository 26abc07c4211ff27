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

IP addresses are personal data too: the filter also cuts every IPv4 / IPv6 address in a record
(message, extra fields, traceback) to its network, /24 or /48, as the access log does
(`mask_ip`, one definition for both). `mask_text` itself leaves addresses alone: the CLI's
error lines (a database host) and the access log's paths use it.

What `mask_text` recognises: our signed keys (`PREFIX-` and 100-130 base32 characters) and
e-mail addresses (`@` or its URL encoding `%40`). A legacy key imported from WHMCS is a random
string with no shape to find in free text: code that handles one logs only `mask_key(key)`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from functools import lru_cache
from typing import Any

_SIGNED_KEY = re.compile(r"\b([A-Za-z0-9]{1,12})-([A-Za-z0-9]{100,130})\b")
_EMAIL = re.compile(
    # The usual local-part characters only: `/`, `=`, `?` and `&` end it, so a query string
    # (`?q=ops@...`) keeps its name and only the address is masked.
    r"([A-Za-z0-9_+-])[A-Za-z0-9._+-]*"
    r"(@|%40)([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+)"
)
# Candidates only: each is parsed by `ipaddress` before it is masked (a time "12:30:45" is not).
# A network's prefix length is part of the match: "203.0.113.0/24" is already masked (the
# filter may run more than once on one record) and "203.0.113.5/32" is not.
_IP_CANDIDATE = re.compile(
    r"(?<![\w.:])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\d{1,3}(?:\.\d{1,3}){3})?)"
    r"(?:/(\d{1,3}))?(?![\w:]|\.\d)"  # IPv6, possibly ending in an IPv4 address
    r"|(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?(?!\w|\.\d)"  # IPv4
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


@lru_cache(maxsize=65536)  # a busy server sees the same addresses over and over
def mask_ip(address: str | None) -> str:
    """An address cut to its network: IPv4 keeps its /24, IPv6 its /48 (`-` if not an IP)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "-"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def mask_ips(text: str) -> str:
    """`text` with every IP address in it cut to its network (`mask_ip`)."""
    if "." not in text and ":" not in text:
        return text

    def masked(match: re.Match[str]) -> str:
        address, prefix = match.group(1, 2) if match.group(1) else match.group(3, 4)
        shown = mask_ip(address)
        if shown == "-" or (prefix and int(prefix) <= int(shown.rpartition("/")[2])):
            return match.group(0)  # not an address, or a network as wide as the mask
        return shown

    return _IP_CANDIDATE.sub(masked, text)


def mask_record_text(text: str) -> str:
    """What a log record may show of `text`: keys, e-mails and IP addresses masked."""
    return mask_ips(mask_text(text))


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
        record.msg, record.args = mask_record_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_record_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_record_text(record.stack_info)
        for name in record.__dict__.keys() - RECORD_ATTRIBUTES:
            record.__dict__[name] = _masked_value(record.__dict__[name])
        return True


# What every LogRecord has; anything else on a record came from `extra=` (a structured field).
RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _masked_value(value: Any) -> Any:
    """An extra field with every text in it masked; containers walked, other objects shown as
    their (masked) text, so that a formatter never prints an unmasked `repr`."""
    if isinstance(value, str):
        return mask_record_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _masked_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked_value(v) for v in value]
    return mask_record_text(str(value))


def install(logger: logging.Logger | None = None) -> None:
    """Put one `PiiFilter` on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, PiiFilter) for f in handler.filters):
            handler.addFilter(PiiFilter())

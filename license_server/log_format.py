"""How log records are written: a text line (the default) or one JSON object per line.

`[logging] format` in settings.toml: "text" (`time LEVEL logger: message`, as always), "json"
for log collectors, or "auto" (text when stderr is a terminal, JSON otherwise). Text stays the
default everywhere, not only on a terminal: operators and tools that read today's lines
(`docker logs`, journald, grep) keep working until someone chooses JSON on purpose.

A JSON line has `time` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`, the
record's extra fields (`extra=`; the security events' fields, say) as fields, and `exception`
with the traceback. The access log writes the same shape itself, with its fields as fields
(web/access_log.py). Masking is the `PiiFilter`'s (log_masking.py; ASVS 4.0.3 V7.1.1, V8.3.4):
it runs on every handler before any formatter, so both formats print the same masked text; this
formatter only serialises. Text a client controls cannot forge a line (ASVS V7.3.1): JSON
escapes newlines and control characters.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from license_server import log_masking

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rfc3339_utc(seconds: float) -> str:
    """`2026-12-03T06:20:01.123Z`."""
    whole = int(seconds)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((seconds - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": rfc3339_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in sorted(record.__dict__.keys() - log_masking.RECORD_ATTRIBUTES):
            if name not in line:
                line[name] = record.__dict__[name]
        if record.exc_info and not record.exc_text:
            # Without the PiiFilter (a handler someone added), still masked.
            record.exc_text = log_masking.mask_record_text(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def resolved_format(setting: str, stream: TextIO | None = None) -> str:
    """ "text" or "json": what "auto" means for this stream."""
    if setting != "auto":
        return setting
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def handler_for(setting: str, stream: TextIO | None = None) -> logging.StreamHandler:
    """A stream handler writing text or JSON lines, as `setting` says (the PII filter is
    added by `log_masking.install`)."""
    handler = logging.StreamHandler(stream)
    if resolved_format(setting, stream) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str, setting: str, stream: TextIO | None = None) -> None:
    """The root logger as `run.py` sets it up: one handler with the chosen format, then the
    PII filter on it (keys, e-mails and addresses masked in every record; V7.1.1)."""
    logging.basicConfig(level=level, handlers=[handler_for(setting, stream)])
    log_masking.install()

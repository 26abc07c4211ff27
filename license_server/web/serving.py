"""How the app is served: options for aiohttp's runner shared by `run.py serve` and tests.

- The access log with masked client addresses (`web.access_log`).
- aiohttp's HTTP parser limits, stated here rather than left implicit: a request past them
  (over `MAX_HEADERS` header fields, a header line over `MAX_LINE`, duplicate singleton
  headers such as two Content-Type lines) never reaches the app and gets aiohttp's own plain
  400. Below them, the verification pipeline refuses floods itself with a signed problem
  document and a logged attempt.
- A protocol logger that writes such refusals as one WARNING line instead of an ERROR with a
  traceback: they are the client's error, not the server's (ASVS 4.0.3 V7.4.1: no internals
  in logs an attacker can flood). Genuine handler failures keep their traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from license_server.web.access_log import JSON_FORMAT, MaskedAccessLogger

MAX_HEADERS = 128  # aiohttp's parser limit; the pipeline refuses more than 48 (431)
MAX_LINE = 8190


class ProtocolErrorLogger(logging.LoggerAdapter):
    """aiohttp's server logger, with malformed HTTP reported as one line."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            detail = str(exc.message).strip().splitlines()[0] if exc.message else str(exc)
            self.warning("malformed HTTP request refused (%s): %s", exc.code, detail[:200])
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)


def runner_options(log_format: str = "text") -> dict[str, Any]:
    """Keyword arguments for `web.run_app` and `web.AppRunner`: the access logger (JSON lines
    when `log_format` is "json", log_format.py), and the request handler's own (its logger and
    parser limits), which both pass on as **kwargs."""
    return {
        "access_log_class": MaskedAccessLogger,
        **({"access_log_format": JSON_FORMAT} if log_format == "json" else {}),
        "logger": ProtocolErrorLogger(logging.getLogger("aiohttp.server"), {}),
        "max_headers": MAX_HEADERS,
        "max_line_size": MAX_LINE,
        "max_field_size": MAX_LINE,
    }

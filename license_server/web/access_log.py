"""Access log lines with the client's address masked (PII in application logs), written cheaply.

Seed 003 ("PII masking in logs") and ASVS 4.0.3 V7.1.1: an IP address is personal data, and
operators ship access logs to places the attempt log (which keeps full addresses, on purpose,
for abuse detection) never goes. IPv4 keeps its /24, IPv6 its /48: enough to see a network
misbehave, not enough to name a customer. License keys never appear: they travel in bodies,
the line has the path without its query string (an admin search `?q=<key or e-mail>` is not
logged), and a key or address in a path is masked (log_masking.py; ASVS V7.1.1, V8.3.4).
Text a client controls (the User-Agent) is masked the same way and escaped, so it cannot
forge log lines (V7.3.1). With `[logging] format = "json"` the line is a JSON object with its
parts as fields (log_format.py's shape).

Cost: the access log is on for every check, so it must cost a few microseconds, not the
50-odd a `logging` record with a flushed write per request cost on the verify path (issue
#16). Masks are cached, the line is formatted once with a timestamp cached per second, and
the lines of one event-loop iteration go out in one write, after the answers were handed to
the transport. The line format is the one the rest of the log uses
(`asctime LEVEL name: message`); the `aiohttp.access` logger's level still switches it off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from functools import lru_cache
from typing import TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, RequestKey, StreamResponse

from license_server.log_masking import mask_ip, mask_text


@lru_cache(maxsize=4096)  # the same few paths over and over
def _logged_path(path: str) -> str:
    # Keys and e-mails masked should a path ever carry one (license_server/log_masking.py).
    return _printable(mask_text(path))


@lru_cache(maxsize=4096)  # modules send the same few User-Agents
def _logged_agent(agent: str) -> str:
    # A client may put anything here, an e-mail address or a key too.
    return _printable(mask_text(agent[:300])[:120])  # masked before it is cut


def _printable(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")  # control, non-ASCII, surrogates


class BatchedLineWriter:
    """Lines gathered during one event-loop iteration, written to `stream` in one call."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self._utc_second = -1
        self._utc_stamp = ""
        self._ms = -1  # the millisecond of the last local timestamp, and that timestamp
        self._ms_stamp = ""

    def timestamp(self) -> str:
        """`logging`'s default asctime (`2026-12-03 06:20:01,123`): the date and time formatted
        once a second, the whole text once a millisecond (the answers of one commit batch go
        out within one: under load most lines reuse it)."""
        ms = int(time.time() * 1000)
        if ms == self._ms:
            return self._ms_stamp
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._ms = ms
        self._ms_stamp = stamp = f"{self._stamp},{ms % 1000:03d}"
        return stamp

    def utc_timestamp(self) -> str:
        """RFC 3339 in UTC (`2026-12-03T06:20:01.123Z`), for JSON lines; formatted once a second."""
        now = time.time()
        second = int(now)
        if second != self._utc_second:
            self._utc_second = second
            self._utc_stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._utc_stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, line: str) -> None:
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tests calling log() directly): write at once
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)

    def flush(self) -> None:
        text, self._lines = "".join(self._lines), []
        stream = self._stream or sys.stderr  # looked up late: tests and daemons swap stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not break serving
            pass


_WRITER = BatchedLineWriter()


# `access_log_format` value (web/serving.py) that makes the access log write JSON lines.
JSON_FORMAT = "json"

# When the app's middleware took the request (time.perf_counter()): the logged duration.
# aiohttp's own figure comes from the loop's clock, which under uvloop (the default loop)
# advances once per loop iteration in whole milliseconds, so every fast answer read "0.0ms".
ANSWER_STARTED = RequestKey("answer_started", float)


class MaskedAccessLogger(AbstractAccessLogger):
    writer = _WRITER

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._json = log_format == JSON_FORMAT

    def log(self, request: BaseRequest, response: StreamResponse, elapsed: float) -> None:
        try:
            elapsed = time.perf_counter() - request[ANSWER_STARTED]
        except (KeyError, TypeError):  # not through the app (a parser error); stand-ins in tests
            pass
        writer = self.writer
        agent = _logged_agent(request.headers.get("User-Agent", "-"))
        if self._json:
            writer.write(self._json_line(request, response, elapsed, agent))
            return
        writer.write(
            f"{writer.timestamp()} INFO {self.logger.name}: {mask_ip(request.remote)} "
            f'"{request.method} {_logged_path(request.path)}" {response.status} '
            f'{response.body_length} {elapsed * 1000:.1f}ms "{agent}"\n'
        )

    def _json_line(
        self, request: BaseRequest, response: StreamResponse, elapsed: float, agent: str
    ) -> str:
        """The same line as a JSON object (log_format.py's shape), its parts as fields."""
        remote, path = mask_ip(request.remote), _logged_path(request.path)
        status, size, ms = response.status, response.body_length, round(elapsed * 1000, 1)
        message = f'{remote} "{request.method} {path}" {status} {size} {ms}ms "{agent}"'
        fields = {
            "time": self.writer.utc_timestamp(),
            "level": "INFO",
            "logger": self.logger.name,
            "message": message,
            "remote": remote,
            "method": request.method,
            "path": path,
            "status": status,
            "bytes": size,
            "duration_ms": ms,
            "user_agent": agent,
        }
        return json.dumps(fields, ensure_ascii=False) + "\n"

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

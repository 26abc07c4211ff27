"""The middleware every response passes through: last-resort handler, headers, signature.

Security headers (ASVS 4.0.3 V14.4): a deny-all CSP (`default-src 'none'`, pages that need more
will add per-request nonces), no sniffing, no framing, no referrer, no caching of answers.
The error middleware turns an unexpected exception into a generic 500 carrying an error id and
logs the details under that id (ASVS V7.4.1: no stack traces or internals to the client).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from license_server import appkeys
from license_server.web.access_log import ANSWER_STARTED
from license_server.web.problems import problem_response
from license_server.web.signing import sign_answer

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # No product or version for a scanner to look up (ASVS 4.0.3 V14.3.3).
    "Server": "license-server",
}
# What every answer carries: the security headers, and no caching of answers.
ANSWER_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


class SecuredResponse(web.Response):
    """A response made with `ANSWER_HEADERS` already set (the verify answers), which the
    middleware then does not set one by one again (issue #16: seven look-ups per check).
    Headers passed in win over them, as they would over the middleware's defaults."""

    def __init__(self, *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(headers={**ANSWER_HEADERS, **headers} if headers else ANSWER_HEADERS,
                         **kwargs)  # fmt: skip


@web.middleware
async def answer_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The one middleware every answer passes: failures become problem documents, then the
    security headers, then (verify endpoints) the answer signature over the final body, then
    a 429's hold (web/tarpit.py).

    One layer instead of three: on the verify path each middleware layer was measurable
    (issue #16), and these only add to the response in a fixed order.
    """
    # The metrics' latency (web/metrics.py) and the access log's duration (web/access_log.py).
    request[ANSWER_STARTED] = started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            _apply(exc)
            _count(request, exc.status, started)
            raise
        # Plain aiohttp errors (404, 405, 413) become problem documents too.
        response = problem_response(exc.status, exc.reason, exc.text or exc.reason)
        for name, value in exc.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers.setdefault(name, value)
    except Exception:
        error_id = secrets.token_hex(8)
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        response = problem_response(
            500,
            "Internal Server Error",
            f"The server could not answer this request. Error id: {error_id}.",
            error_id=error_id,
        )
    _apply(response, request.transport is not None and request.secure)
    sign_answer(request, response)
    status = response.status
    if status == 429:
        # Every refusal by a rate limit, from whichever app or endpoint, is held before it is
        # sent (web/tarpit.py, ASVS 4.0.3 V2.2.1); nothing else waits.
        await request.app[appkeys.TARPIT].hold()
    _count(request, status, started)
    return response


def _count(request: web.Request, status: int, started: float) -> None:
    """The metrics' hook: counted here, in the middleware every answer passes anyway."""
    metrics = request.app.get(appkeys.METRICS)
    if metrics is not None:
        metrics.request_done(request, status, time.perf_counter() - started)


# Only over TLS (RFC 6797 section 7.2: a host must not send it over plain HTTP); behind a
# TLS-terminating proxy, the proxy sends it.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def _apply(response: web.StreamResponse, secure: bool = False) -> None:
    headers = response.headers
    if not isinstance(response, SecuredResponse):
        for name, value in ANSWER_HEADERS.items():
            headers.setdefault(name, value)
    if secure:
        headers.setdefault(*HSTS)

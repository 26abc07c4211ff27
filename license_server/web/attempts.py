"""Recording an attempt from a request handler (shared by the native and WHMCS endpoints)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt

log = logging.getLogger(__name__)


def new_attempt(request: web.Request, source_ip: str, endpoint: str) -> Attempt:
    # Positional: a keyword call of the 15-field dataclass costs twice as much, every check.
    return Attempt(
        int(time.time() * 1000),  # at_ms
        endpoint,
        source_ip,
        "",  # reported_ip
        "",  # domain_raw
        "",  # domain
        "",  # directory
        None,  # license_id
        None,  # key_hash
        "",  # product
        "",  # result
        "",  # reason
        "",  # client_version
        request.headers.get("User-Agent", ""),  # user_agent, made storable by Attempt.row
        0,  # latency_us
    )


async def record(app: web.Application, attempt: Attempt, started_ns: int) -> bool:
    """Commit the attempt; False if it could not be (the caller must not acknowledge)."""
    attempt.latency_us = (time.perf_counter_ns() - started_ns) // 1000
    try:
        await app[appkeys.ATTEMPT_LOG].append(attempt)
    except Exception:
        return False
    return True

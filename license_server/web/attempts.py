"""Recording an attempt from a request handler (shared by the native and WHMCS endpoints)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt

log = logging.getLogger(__name__)


def new_attempt(request: web.Request, source_ip: str, endpoint: str) -> Attempt:
    return Attempt(
        at_ms=int(time.time() * 1000),
        endpoint=endpoint,
        source_ip=source_ip,
        reported_ip="",
        domain_raw="",
        domain="",
        directory="",
        license_id=None,
        key_hash=None,
        product="",
        result="",
        reason="",
        client_version="",
        user_agent=request.headers.get("User-Agent", ""),  # made storable by Attempt.row
        latency_us=0,
    )


async def record(app: web.Application, attempt: Attempt, started_ns: int) -> bool:
    """Commit the attempt; False if it could not be (the caller must not acknowledge)."""
    attempt.latency_us = (time.perf_counter_ns() - started_ns) // 1000
    try:
        await app[appkeys.ATTEMPT_LOG].append(attempt)
    except Exception:
        return False
    return True

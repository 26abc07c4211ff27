"""The one verification pipeline behind both verify endpoints (native and WHMCS-compatible).

The endpoints differ only in how they parse a request and render an answer (`Endpoint`);
everything else happens here once, in this order:

1. `per-ip` rate limit, before any work;
2. parse (the endpoint's), or a 4xx for a malformed request;
3. the key's offline check, the `per-key` limit, and — only for a key that is not known to be
   genuine — the `unknown-key-per-ip` budget: a key whose signature verifies is not a guess,
   so a customer on shared hosting is not refused because a neighbour was guessing;
4. the decision (`Verifier.check`), after which a guess spends that budget;
5. the attempt is committed to the log, and only then is the answer sent: an attempt that
   could not be recorded is not acknowledged (503).

A refusal by any of the limits (429) is held for `rate_limit.refusal_hold_seconds` by the
answer middleware before it is sent (web/tarpit.py); a check within its limits never waits.

Every attempt is logged, malformed and rate-limited ones included, with one meaning per
column for both endpoints: `product` is the product of the license the key belongs to ("" for
an unknown key), `domain`/`directory`/`reported_ip` are what the module sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_log import Attempt
from license_server.licensing.decision import Facts, refused
from license_server.licensing.verifier import Outcome, RawBinding
from license_server.web.attempts import new_attempt, record
from license_server.web.rate_limit import Limited
from license_server.web.request_body import Malformed
from license_server.web.signing import sign_answer

MAX_HEADERS = 48
MAX_HEADER_BYTES = 16 * 1024


@dataclass(slots=True)
class CheckInput:
    """A parsed request: what both endpoints hand to the pipeline."""

    key: str
    raw: RawBinding  # as sent (echoed to WHMCS modules, logged)
    facts: Facts | None  # normalised; None when a binding value is not a host / IP / dir
    bad_field: str = ""  # which one, when facts is None
    client_version: str = ""
    bind_ip_and_dir: bool = False  # WHMCS: a first use also pins the IP and directory
    extra: Any = None  # the endpoint's own (nonce, check_token)


class Endpoint(Protocol):
    name: str  # the attempt log's `endpoint` column

    async def parse(self, request: web.Request, source_ip: str) -> CheckInput: ...

    async def decided(
        self, request: web.Request, check: CheckInput, outcome: Outcome
    ) -> web.Response: ...

    def limited(
        self, request: web.Request, check: CheckInput | None, limited: Limited
    ) -> web.Response: ...

    def malformed(self, request: web.Request, problem: Malformed) -> web.Response: ...

    def unavailable(self) -> web.Response: ...


async def run_check(request: web.Request, endpoint: Endpoint) -> web.Response:
    started = time.perf_counter_ns()
    app = request.app  # looked up once: each `request.app` goes through the match info
    source_ip = app[appkeys.CLIENT_IP](request)
    attempt = new_attempt(request, source_ip, endpoint.name)
    response = await _answer(request, app, endpoint, attempt, source_ip)
    # Signed before the commit wait, not after it in the middleware: the signature (~40 us)
    # then overlaps the commit on the writer thread, and once the commit returns the batch's
    # answers go out back to back (issue #16). The 503 below is signed by the middleware.
    sign_answer(request, response)
    if not await record(app, attempt, started):
        # Not recorded means not acknowledged: the module retries later.
        return endpoint.unavailable()
    return response


async def _answer(
    request: web.Request, app: web.Application, endpoint: Endpoint, attempt: Attempt, source_ip: str
) -> web.Response:
    limiter = app[appkeys.RATE_LIMITER]
    verifier = app[appkeys.RUNTIME].verifier

    def too_many(check: CheckInput | None, limited: Limited) -> web.Response:
        attempt.result, attempt.reason = "rate_limited", limited.policy
        return endpoint.limited(request, check, limited)

    limited = await limiter.before_reading(source_ip)
    if limited:
        return too_many(None, limited)
    try:
        _check_headers(request)
        check = await endpoint.parse(request, source_ip)
    except Malformed as problem:
        attempt.result, attempt.reason = "malformed", problem.reason
        _fill_from_fields(attempt, problem.fields)
        response = endpoint.malformed(request, problem)
        if problem.status in (408, 413) or problem.reason == "client_gone":
            # The rest of the body may still be on its way: it must not be read as the next
            # request on this connection.
            response.force_close()
        return response
    _fill_from_check(attempt, check)

    if not check.key:  # the WHMCS endpoint answers a missing key (the native one: 400)
        outcome = Outcome(refused("missing_key"), None, b"")
    else:
        key = verifier.lookup(check.key)  # the offline checks, once per request
        if key.lookup is not None and key.lookup.signed is not None:
            # A verified signature names its license: a check refused by a rate limit is still
            # attributed to it (the anomaly detectors count floods per license).
            attempt.license_id = key.lookup.signed.license_id
        limited = await limiter.for_key(lambda: key.rate_limit_id)
        if not limited and not verifier.is_known_genuine(key):
            limited = await limiter.guessing_exhausted(source_ip)
        if limited:
            return too_many(check, limited)
        if check.facts is None:
            outcome = Outcome(refused(f"{check.bad_field}_not_allowed"), None, b"")
        else:
            outcome = await verifier.check(
                key, check.facts, check.raw, bind_ip_and_dir=check.bind_ip_and_dir
            )
    limited = await limiter.after_decision(outcome.verdict.reason, source_ip)
    if limited:
        return too_many(check, limited)
    license = outcome.license
    attempt.result, attempt.reason = outcome.verdict.answer.value, outcome.verdict.reason
    attempt.license_id = license.id if license else None
    attempt.key_hash = None if license or not outcome.key_hash else outcome.key_hash
    attempt.product = license.product.code if license else ""
    return await endpoint.decided(request, check, outcome)


def _check_headers(request: web.Request) -> None:
    """A header flood is refused (RFC 6585 431) before the body is read: no module sends more
    than a handful. Past aiohttp's own parser limits a request never reaches the app (see
    `web.serving`)."""
    headers = request.raw_headers
    if len(headers) > MAX_HEADERS or sum(map(len, chain.from_iterable(headers))) > MAX_HEADER_BYTES:
        raise Malformed(
            431,
            "Request Header Fields Too Large",
            f"Send at most {MAX_HEADERS} header fields and {MAX_HEADER_BYTES} bytes of them.",
            "http_431",
        )


def _fill_from_check(attempt: Attempt, check: CheckInput) -> None:
    attempt.domain_raw = check.raw.domain
    attempt.reported_ip = check.raw.ip
    attempt.directory = check.raw.directory
    attempt.domain = check.facts.domain if check.facts else ""
    attempt.client_version = check.client_version


def _fill_from_fields(attempt: Attempt, fields: dict[str, Any]) -> None:
    """Keep what can be kept of a malformed request, never the key itself (the attempt log
    makes every text storable and cuts it to size)."""

    def text(*names: str) -> str:
        for name in names:
            value = fields.get(name)
            if isinstance(value, str):
                return value
        return ""

    attempt.domain_raw = text("domain")
    attempt.reported_ip = text("ip")
    attempt.directory = text("directory", "dir")
    attempt.client_version = text("client_version")

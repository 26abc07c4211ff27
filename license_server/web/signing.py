"""Signs every answer of the verification endpoints, errors and rate limits included.

A module trusts nothing it cannot verify: the `License-Signature` header (DESIGN.md) covers the
exact body bytes of every answer under the signed prefixes, including 4xx problem documents
and the 429s of the rate limiter, so a forged "invalid" or a proxy's rewrite is detectable.
The middleware calls it last, after every failure has been turned into a response.
"""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys
from license_server.crypto.answers import signature_header

SIGNED_PREFIXES = ("/api/v1/verify", "/modules/servers/licensing/")
SIGNATURE_HEADER = "License-Signature"
# Set on a response whose body carries its own signature over every byte (the WHMCS answer's
# <licensesignature> tag, which also binds the module's check_token): signing it again would
# double the cost of the answer and add nothing.
SIGNED_IN_BODY = web.ResponseKey("signed_in_body", bool)


def sign_answer(request: web.Request, response: web.StreamResponse) -> None:
    """Add `License-Signature` over the exact body of an answer under the signed prefixes,
    unless it has one: the pipeline signs its answers before their commit, the middleware
    every other answer (errors, the 503 of an attempt that was not logged)."""
    if (
        request.path.startswith(SIGNED_PREFIXES)
        and isinstance(response, web.Response)
        # A response's Mapping.get raises and catches KeyError for a missing key: one that
        # holds no keys at all (every native answer) is not asked (issue #16, hot path).
        and not (len(response) and response.get(SIGNED_IN_BODY))
        and SIGNATURE_HEADER not in response.headers
    ):
        body = response.body
        if isinstance(body, bytes):
            keyring = request.app[appkeys.RUNTIME].keyring
            response.headers[SIGNATURE_HEADER] = signature_header(keyring, body)

"""The reference Python client (license_server/client.py) against the real app, behind a proxy.

A small aiohttp proxy in front of the app plays the man in the middle: it strips the
`License-Signature` header, re-signs with a key the module does not trust under the genuine
key id, alters the body, or replays an earlier genuine answer. Each such answer proves nothing,
so the client must treat it as an outage (DESIGN.md, "The native verification protocol"):
the cached local key while valid, then grace, then unreachable, always flagged `unverified`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.client import (
    AnswerRejected,
    InvalidDomain,
    LicenseClient,
    normalise_domain,
    parse_signature_header,
    verify_local_key,
)
from tests.verify_helpers import (
    FAILED_CHECKS,
    attempts,
    issue,
    product,
    public_keys,
    reference_client,
)

DOMAIN = "shop.example.com"


class Middleman:
    """Forwards to the app and spoils the answer according to `mode`."""

    def __init__(self, upstream: str, session) -> None:
        self.upstream = upstream
        self.session = session
        self.mode = "pass"
        self.captured: tuple[bytes, str] | None = None
        self.rogue = Ed25519PrivateKey.generate()
        self.url = ""  # set once the proxy listens

    async def handle(self, request: web.Request) -> web.Response:
        if self.mode == "replay":
            assert self.captured is not None
            body, signature = self.captured
        else:
            async with self.session.post(
                self.upstream + request.path,
                data=await request.read(),
                headers={"Content-Type": request.content_type},
            ) as upstream:
                body = await upstream.read()
                signature = upstream.headers["License-Signature"]
            self.captured = (body, signature)
        headers = {"Content-Type": "application/json", "License-Signature": signature}
        if self.mode == "strip":
            del headers["License-Signature"]
        elif self.mode == "wrong_signature":
            # The genuine key id, but a signature only the rogue key could have made.
            kid, _ = parse_signature_header(signature)
            forged = base64.b64encode(self.rogue.sign(body)).decode()
            headers["License-Signature"] = (
                f'keyid="{kid}", algorithm="ed25519", signature="{forged}"'
            )
        elif self.mode == "tamper":
            body = body.replace(b'"status":"active"', b'"status":"revoked"', 1)
        return web.Response(body=body, headers=headers)


@pytest.fixture
async def key(app_runtime):
    await product(app_runtime, local_key_days=7, grace_days=14)
    _, key = await issue(app_runtime)
    return key


@pytest.fixture
async def middleman(aiohttp_server, client) -> Middleman:
    upstream = str(client.make_url("")).rstrip("/")
    man = Middleman(upstream, client.session)
    app = web.Application()
    app.router.add_post("/api/v1/verify", man.handle)
    man.url = str((await aiohttp_server(app)).make_url(""))
    return man


def via(middleman, client, app_runtime, clock: Callable[[], float], **options) -> LicenseClient:
    return LicenseClient(
        middleman.url, public_keys(app_runtime), session=client.session, clock=clock, **options
    )


async def genuine_local_key(middleman, client, app_runtime, key) -> tuple[str, dict]:
    """A first check through the proxy while it passes answers on; captures that answer."""
    middleman.mode = "pass"
    result = await via(middleman, client, app_runtime, time.time).check(key, DOMAIN)
    assert (result.status, result.unverified) == ("active", False)
    assert result.local_key and result.claims
    return result.local_key, result.claims


@pytest.mark.parametrize("mode", list(FAILED_CHECKS))
async def test_unverified_answer_with_a_valid_cached_key_is_active_from_cache(
    middleman, client, app_runtime, key, mode
):
    cached, claims = await genuine_local_key(middleman, client, app_runtime, key)
    middleman.mode = "pass" if mode == "stale" else mode
    # An hour on: the cached key is still valid, and a live answer is stale by then.
    shift = 3600 if mode == "stale" else 0
    checker = via(middleman, client, app_runtime, lambda: time.time() + shift)
    result = await checker.check(key, DOMAIN, cached_local_key=cached)
    assert (result.status, result.reason, result.unverified) == (
        "active",
        FAILED_CHECKS[mode],
        True,
    )
    assert result.local_key == cached and result.claims["exp"] == claims["exp"]


@pytest.mark.parametrize("mode", list(FAILED_CHECKS))
async def test_unverified_answer_after_exp_is_grace(middleman, client, app_runtime, key, mode):
    cached, claims = await genuine_local_key(middleman, client, app_runtime, key)
    middleman.mode = "pass" if mode == "stale" else mode
    later = claims["exp"] + 1  # expired, inside grace_until
    # A wide skew isolates the check under test; "stale" keeps the default.
    skew = {} if mode == "stale" else {"max_skew": 10**9}
    checker = via(middleman, client, app_runtime, lambda: later, **skew)
    result = await checker.check(key, DOMAIN, cached_local_key=cached)
    assert (result.status, result.reason, result.unverified) == ("grace", FAILED_CHECKS[mode], True)


@pytest.mark.parametrize("mode", list(FAILED_CHECKS))
async def test_unverified_answer_without_a_usable_key_is_unreachable(
    middleman, client, app_runtime, key, mode
):
    cached, claims = await genuine_local_key(middleman, client, app_runtime, key)
    middleman.mode = "pass" if mode == "stale" else mode
    skew = {} if mode == "stale" else {"max_skew": 10**9}
    shift = 3600 if mode == "stale" else 0
    fresh = via(middleman, client, app_runtime, lambda: time.time() + shift, **skew)
    nothing = await fresh.check(key, DOMAIN)
    assert (nothing.status, nothing.reason, nothing.unverified) == (
        "unreachable",
        FAILED_CHECKS[mode],
        True,
    )
    assert nothing.local_key is None
    past_grace = via(middleman, client, app_runtime, lambda: claims["grace_until"] + 1, **skew)
    too_old = await past_grace.check(key, DOMAIN, cached_local_key=cached)
    assert (too_old.status, too_old.reason, too_old.unverified) == (
        "unreachable",
        FAILED_CHECKS[mode],
        True,
    )


async def test_a_genuine_answer_is_not_flagged(middleman, client, app_runtime, key):
    """Control: through the same proxy, passing answers on, the server decides."""
    await genuine_local_key(middleman, client, app_runtime, key)
    result = await via(middleman, client, app_runtime, time.time).check(key, "other.example.org")
    assert (result.status, result.reason, result.unverified) == ("invalid", "seat_limit", False)


async def test_an_unknown_key_id_is_unverified_too(middleman, client, app_runtime, key):
    await genuine_local_key(middleman, client, app_runtime, key)
    rogue = Ed25519PrivateKey.generate()
    checker = LicenseClient(
        middleman.url, {"someone-else": rogue.public_key()}, session=client.session
    )
    result = await checker.check(key, DOMAIN)
    assert (result.status, result.reason, result.unverified) == (
        "unreachable",
        "unknown_key_id",
        True,
    )


# ------------------------------------------------------------------ domains as the server sees them


@pytest.mark.parametrize(
    ("domain", "canonical"),
    [
        ("shop.com?x=1", "shop.com"),
        ("https://user@WWW.Shop.com:8443/whmcs/#top", "shop.com"),
        ("[::1]:80", "::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::FFFF:7f00:1]", "127.0.0.1"),
    ],
)
async def test_the_client_accepts_its_own_genuine_local_key(
    client, app_runtime, key, domain, canonical
):
    result = await reference_client(client, app_runtime).check(key, domain)
    assert (result.status, result.unverified) == ("active", False)
    assert result.claims["domain"] == canonical


@pytest.mark.parametrize("domain", ["127.1", "0x7f.1", "", "exa mple.com", "[::1", "a..b.com"])
async def test_a_domain_the_server_would_refuse_is_not_sent(client, app_runtime, key, domain):
    before = len(await attempts(app_runtime))
    result = await reference_client(client, app_runtime).check(key, domain)
    assert (result.status, result.reason) == ("invalid", "no_domain")
    assert len(await attempts(app_runtime)) == before
    with pytest.raises(InvalidDomain):
        normalise_domain(domain)


@pytest.mark.parametrize("raw", ["shop\udcff.com", "x" * 100_000, "☃.com", "\u00ad"])
def test_normalise_domain_refuses_hostile_text(raw):
    with pytest.raises(InvalidDomain):
        normalise_domain(raw)


async def test_product_codes_compare_case_insensitively(client, app_runtime, key):
    result = await reference_client(client, app_runtime).check(key, DOMAIN)
    assert result.claims["aud"] == "mymod"
    now = time.time()
    for code in ("mymod", "MYMOD", " MyMod "):
        verify_local_key(
            result.local_key, public_keys(app_runtime), license_key=key, domain=DOMAIN,
            now=now, product=code,
        )  # fmt: skip
    with pytest.raises(AnswerRejected, match="another product"):
        verify_local_key(
            result.local_key, public_keys(app_runtime), license_key=key, domain=DOMAIN,
            now=now, product="othermod",
        )  # fmt: skip

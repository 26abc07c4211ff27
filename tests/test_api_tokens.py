"""Access tokens and rotating refresh tokens of the vendor API (issue #13, staff/api_tokens.py):
issue, use, expiry on the service's clock (never a sleep), rotation, reuse revoking the whole
family and its access tokens, forged and wrong tokens refused with a 401 problem, scopes
carried, the key's rate limit and revocation applying to its tokens."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.appkeys import RUNTIME
from license_server.crypto.keystore import load_token_keyring
from license_server.licensing.actors import CLI
from license_server.staff.api_tokens import ACCESS_SECONDS, AUDIENCE, REFRESH_SECONDS
from license_server.web.api import API_KEYS, API_TOKENS
from tests.api_helpers import PRODUCT_BODY, api, make_key
from tests.conftest import with_sections

PROBLEM = "application/problem+json"
TOKENS = "/api/v1/tokens"


async def _exchange(client, key_headers) -> dict:
    response, body = await api(client, "POST", TOKENS, key_headers, {"grant_type": "api_key"})
    assert response.status == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    return body


async def _refresh(client, refresh_token: str):
    return await api(
        client, "POST", TOKENS, {}, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _shift_clock(client, seconds: int):
    service = client.app[RUNTIME].licenses
    original = service.clock
    service.clock = lambda: original() + seconds
    return original


async def _assert_refused(client, token: str, path: str = "/api/v1/products") -> dict:
    response, problem = await api(client, "GET", path, _bearer(token))
    assert response.status == 401 and response.content_type == PROBLEM, problem
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    return problem


async def test_an_api_key_buys_a_short_lived_eddsa_token_that_works_as_a_bearer(client):
    _, key_headers = await make_key(client, ["product:*", "license:read"])
    body = await _exchange(client, key_headers)
    assert body["token_type"] == "Bearer" and body["expires_in"] == ACCESS_SECONDS
    assert body["refresh_token_expires_in"] == REFRESH_SECONDS
    assert body["refresh_token"].startswith("lsr_") and body["scope"] == "product:* license:read"

    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA" and header["typ"] == "at+jwt" and header["kid"]
    jwks = await (await client.get("/api/v1/tokens/jwks.json")).json()
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(body["access_token"], public, algorithms=["EdDSA"], audience=AUDIENCE)
    assert claims["iss"] == "license-server" and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == ACCESS_SECONDS and claims["nbf"] == claims["iat"]
    key = (await client.app[API_KEYS].all())[0]
    assert claims["sub"] == str(key.id) and claims["client_id"] == key.prefix
    assert claims["scope"] == "product:* license:read" and len(claims["jti"]) >= 16

    # Not the license-signing key (RFC 8725 §3.9): neither in the license JWKS.
    license_jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] not in {k["kid"] for k in license_jwks["keys"]}

    response, products = await api(client, "GET", "/api/v1/products", _bearer(body["access_token"]))
    assert response.status == 200 and products == {"items": []}
    response, _ = await api(
        client, "POST", "/api/v1/products", _bearer(body["access_token"]), PRODUCT_BODY
    )
    assert response.status == 201
    # The audit log names the key behind the token.
    async with client.app[RUNTIME].db.read() as conn:
        actors = await conn.fetch_all(
            "SELECT actor_kind || ':' || actor_id AS actor, action FROM audit_log ORDER BY id"
        )
    assert {"actor": f"api:{key.prefix}", "action": "api_token.issue"} in actors
    assert {"actor": f"api:{key.prefix}", "action": "license.product"} in actors


async def test_the_token_carries_the_keys_scopes_and_no_more(client):
    _, key_headers = await make_key(client, ["product:read"])
    token = (await _exchange(client, key_headers))["access_token"]
    response, _ = await api(client, "GET", "/api/v1/products", _bearer(token))
    assert response.status == 200
    response, problem = await api(client, "POST", "/api/v1/products", _bearer(token), PRODUCT_BODY)
    assert response.status == 403 and problem["detail"].endswith("product:create.")
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_an_access_token_expires_after_15_minutes_with_a_small_leeway(client):
    _, key_headers = await make_key(client)
    # A stopped clock: on a moving one, a second boundary passed between the exchange and
    # the request made "29 s past expiry" 30 (CI saw a 401 once).
    service = client.app[RUNTIME].licenses
    issued = float(int(service.clock()))
    service.clock = lambda: issued
    token = (await _exchange(client, key_headers))["access_token"]
    service.clock = lambda: issued + ACCESS_SECONDS + 29  # within the 30 s leeway
    response, _ = await api(client, "GET", "/api/v1/products", _bearer(token))
    assert response.status == 200
    service.clock = lambda: issued + ACCESS_SECONDS + 30
    problem = await _assert_refused(client, token)
    assert problem["detail"] == "The access token has expired."


async def test_a_refresh_token_rotates_on_every_use(client):
    _, key_headers = await make_key(client)
    first = await _exchange(client, key_headers)
    _shift_clock(client, 600)
    response, second = await _refresh(client, first["refresh_token"])
    assert response.status == 200, second
    assert response.headers["Cache-Control"] == "no-store"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    response, third = await _refresh(client, second["refresh_token"])
    assert response.status == 200
    for token in (first, second, third):  # the family is intact: every access token works
        response, _ = await api(client, "GET", "/api/v1/products", _bearer(token["access_token"]))
        assert response.status == 200
    # One family, three refresh tokens, two of them spent; no row holds a token in clear.
    async with client.app[RUNTIME].db.read() as conn:
        rows = await conn.fetch_all("SELECT * FROM api_refresh_tokens ORDER BY id")
        families = await conn.fetch_all("SELECT * FROM api_token_families")
    assert len(families) == 1 and len(rows) == 3
    assert [row["spent_at"] is not None for row in rows] == [True, True, False]
    dump = repr(rows).encode()
    assert all(t["refresh_token"].encode() not in dump for t in (first, second, third))


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(client):
    _, key_headers = await make_key(client)
    first = await _exchange(client, key_headers)
    response, second = await _refresh(client, first["refresh_token"])
    assert response.status == 200
    other_family = await _exchange(client, key_headers)

    response, problem = await _refresh(client, first["refresh_token"])  # the thief, or the owner
    assert response.status == 401 and response.content_type == PROBLEM
    assert "whole family is now revoked" in problem["detail"]
    # The family's live refresh token and every access token of it are refused at once.
    response, problem = await _refresh(client, second["refresh_token"])
    assert response.status == 401 and "revoked" in problem["detail"]
    for token in (first, second):
        problem = await _assert_refused(client, token["access_token"])
        assert problem["detail"] == "The access token was revoked."
    # Another family of the same key is untouched; the key itself still works.
    response, _ = await api(
        client, "GET", "/api/v1/products", _bearer(other_family["access_token"])
    )
    assert response.status == 200
    assert (await _exchange(client, key_headers))["access_token"]
    async with client.app[RUNTIME].db.read() as conn:
        revoked = await conn.fetch_all(
            "SELECT revoked_reason FROM api_token_families WHERE revoked_at IS NOT NULL"
        )
        audit = await conn.fetch_value(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'api_token.revoke_family'"
        )
    assert revoked == [{"revoked_reason": "refresh token reused"}] and audit == 1


async def test_refresh_tokens_expire_after_7_days_and_never_outlive_the_key(client):
    _, key_headers = await make_key(client)
    first = await _exchange(client, key_headers)
    _shift_clock(client, REFRESH_SECONDS)
    response, problem = await _refresh(client, first["refresh_token"])
    assert response.status == 401 and "expired" in problem["detail"]


async def test_revoking_the_api_key_revokes_its_families_and_tokens(client):
    _, key_headers = await make_key(client)
    tokens = await _exchange(client, key_headers)
    key = (await client.app[API_KEYS].all())[0]
    await client.app[API_KEYS].revoke(CLI, key.id)
    problem = await _assert_refused(client, tokens["access_token"])
    assert "revoked" in problem["detail"]
    response, problem = await _refresh(client, tokens["refresh_token"])
    assert response.status == 401
    async with client.app[RUNTIME].db.read() as conn:
        live = await conn.fetch_value(
            "SELECT COUNT(*) FROM api_token_families WHERE revoked_at IS NULL"
        )
    assert live == 0


async def test_the_token_endpoint_refuses_bad_grants(client):
    _, key_headers = await make_key(client)
    tokens = await _exchange(client, key_headers)
    cases = [
        ({}, {"grant_type": "api_key"}, 401),  # no API key
        (_bearer("lsk_live_000000000000_" + "A" * 43), {"grant_type": "api_key"}, 401),
        # An access token cannot buy a new family: a stolen one would live for ever.
        (_bearer(tokens["access_token"]), {"grant_type": "api_key"}, 401),
        ({}, {"grant_type": "refresh_token", "refresh_token": "lsr_" + "A" * 43}, 401),
        ({}, {"grant_type": "refresh_token", "refresh_token": "nonsense"}, 401),
        ({}, {"grant_type": "refresh_token"}, 400),
        (key_headers, {"grant_type": "api_key", "refresh_token": "lsr_x"}, 400),
        (key_headers, {"grant_type": "password"}, 400),
        (key_headers, {"grant_type": 1}, 400),
        ({}, {"grant_type": "refresh_token", "refresh_token": "x" * 101}, 400),
    ]
    for headers, body, status in cases:
        response, problem = await api(client, "POST", TOKENS, headers, body)
        assert response.status == status, (body, problem)
        assert response.content_type == PROBLEM
        if status == 400:
            assert problem["errors"] and problem["errors"][0]["location"] == "body"
    response = await client.post(
        TOKENS,
        data=b'{"grant_type":"api_key","grant_type":"api_key"}',
        headers={**key_headers, "Content-Type": "application/json"},
    )
    assert response.status == 400  # duplicate names
    # Nothing was issued by the refused requests: one family only.
    async with client.app[RUNTIME].db.read() as conn:
        assert await conn.fetch_value("SELECT COUNT(*) FROM api_token_families") == 1


async def test_no_idempotency_record_keeps_the_tokens(client):
    _, key_headers = await make_key(client)
    headers = {**key_headers, "Idempotency-Key": "tok-1"}
    a = await api(client, "POST", TOKENS, headers, {"grant_type": "api_key"})
    b = await api(client, "POST", TOKENS, headers, {"grant_type": "api_key"})
    assert a[0].status == b[0].status == 200 and a[1]["refresh_token"] != b[1]["refresh_token"]
    async with client.app[RUNTIME].db.read() as conn:
        assert await conn.fetch_value("SELECT COUNT(*) FROM api_idempotency") == 0


# -- forged and wrong tokens ----------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(client, token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def _real(client) -> tuple[str, dict, dict]:
    _, key_headers = await make_key(client)
    token = (await _exchange(client, key_headers))["access_token"]
    return token, jwt.get_unverified_header(token), _claims(client, token)


def _signed_with_token_key(client, claims: dict, **headers) -> str:
    keyring = client.app[API_TOKENS].keyring
    signer = keyring.active
    head = {"kid": signer.kid, "typ": "at+jwt", **headers}
    return jwt.encode(claims, signer.private_key, algorithm="EdDSA", headers=head)


@pytest.fixture
async def roomy_client(settings, aiohttp_client):
    """An app whose guessing budget outlasts the many forged tokens of one test."""
    from license_server.app import create_app

    roomy = with_sections(settings, rate_limit={"unknown_key_per_ip": "1000/minute"})
    return await aiohttp_client(create_app(roomy))


async def test_forged_and_mistaken_tokens_are_refused(roomy_client):
    client = roomy_client
    token, header, claims = await _real(client)
    keyring = client.app[API_TOKENS].keyring
    public_raw = keyring.active.public_raw
    now = claims["iat"]
    head, body, signature = token.split(".")
    forged = {
        # alg none, with and without a signature
        "none": f"{_b64({**header, 'alg': 'none'})}.{body}.",
        "none-signed": f"{_b64({**header, 'alg': 'none'})}.{body}.{signature}",
        # HS256 keyed with the public key (algorithm confusion)
        "hs256": jwt.encode(
            claims, public_raw, algorithm="HS256", headers={"kid": header["kid"], "typ": "at+jwt"}
        ),
        # the header claims EdDSA but the signature is over other claims
        "tampered": f"{head}.{_b64({**claims, 'scope': '*'})}.{signature}",
        # a different Ed25519 key under our kid
        "other-key": jwt.encode(
            claims,
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": header["kid"], "typ": "at+jwt"},
        ),
        "unknown-kid": _signed_with_token_key(client, claims, kid="nope"),
        "no-kid": jwt.encode(
            claims, keyring.active.private_key, algorithm="EdDSA", headers={"typ": "at+jwt"}
        ),
        "wrong-typ": _signed_with_token_key(client, claims, typ="JWT"),
        "wrong-aud": _signed_with_token_key(client, {**claims, "aud": "someone-else"}),
        "aud-list": _signed_with_token_key(client, {**claims, "aud": [AUDIENCE, "x"]}),
        "wrong-iss": _signed_with_token_key(client, {**claims, "iss": "license-server2"}),
        "expired": _signed_with_token_key(
            client, {**claims, "iat": now - 2000, "nbf": now - 2000, "exp": now - 1100}
        ),
        "nbf-future": _signed_with_token_key(client, {**claims, "nbf": now + 600}),
        "iat-future": _signed_with_token_key(
            client, {**claims, "iat": now + 600, "nbf": now, "exp": now + 900}
        ),
        "too-long": _signed_with_token_key(client, {**claims, "exp": now + 86400}),
        "no-jti": _signed_with_token_key(client, {k: v for k, v in claims.items() if k != "jti"}),
        "no-fam": _signed_with_token_key(client, {k: v for k, v in claims.items() if k != "fam"}),
        "string-exp": _signed_with_token_key(client, {**claims, "exp": str(claims["exp"])}),
        "other-sub": _signed_with_token_key(client, {**claims, "sub": "999"}),
        "unknown-family": _signed_with_token_key(client, {**claims, "fam": 999_999}),
        "garbage": "a.b.c",
    }
    for name, bad in forged.items():
        problem = await _assert_refused(client, bad)
        assert problem["title"] == "Unauthorized", name
    # Signed by the license-signing key (same algorithm, another purpose): refused.
    license_key = client.app[RUNTIME].keyring.active
    crossed = jwt.encode(claims, license_key.private_key, algorithm="EdDSA",
                         headers={"kid": license_key.kid, "typ": "at+jwt"})  # fmt: skip
    await _assert_refused(client, crossed)
    # And the genuine one still works.
    response, _ = await api(client, "GET", "/api/v1/products", _bearer(token))
    assert response.status == 200


async def test_refused_tokens_spend_the_guessing_budget(client):
    _, key_headers = await make_key(client)
    token = (await _exchange(client, key_headers))["access_token"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    statuses = [(await api(client, "GET", "/api/v1/bans", _bearer(forged)))[0].status
                for _ in range(11)]  # fmt: skip
    assert statuses == [401] * 10 + [429]  # unknown_key_per_ip: 10/minute
    refresh = {"grant_type": "refresh_token", "refresh_token": "lsr_" + "B" * 43}
    response, _ = await api(client, "POST", TOKENS, {}, refresh)
    assert response.status == 429 and "Retry-After" in response.headers


async def test_the_key_rate_limit_applies_to_its_tokens(settings, aiohttp_client):
    from license_server.app import create_app

    limited = with_sections(settings, rate_limit={"per_api_key": "3/minute"})
    client = await aiohttp_client(create_app(limited))
    _, key_headers = await make_key(client)
    tokens = await _exchange(client, key_headers)  # one use of the key
    statuses = []
    for _ in range(3):
        response, _ = await api(client, "GET", "/api/v1/products", _bearer(tokens["access_token"]))
        statuses.append(response.status)
    assert statuses == [200, 200, 429]  # the token counts against the key behind it
    assert "Retry-After" in response.headers and "RateLimit" in response.headers


async def test_the_token_key_is_made_once_and_kept_private(settings):
    first = load_token_keyring(settings.keys_dir)
    again = load_token_keyring(settings.keys_dir)
    assert first.active.kid == again.active.kid
    [path] = list((settings.keys_dir / "tokens").glob("*.pem"))
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("path", ["/api/v1/licenses", "/api/v1/attempts", "/api/v1/bans"])
async def test_an_access_token_works_on_every_kind_of_operation(client, path):
    _, key_headers = await make_key(client)
    token = (await _exchange(client, key_headers))["access_token"]
    response, body = await api(client, "GET", path, _bearer(token))
    assert response.status == 200, body

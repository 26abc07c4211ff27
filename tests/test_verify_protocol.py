"""The signed protocol: every answer signed, and what a client must reject (DESIGN.md v1)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.client import (
    AnswerRejected,
    public_keys_from_jwks,
    verify_answer,
    verify_local_key,
)
from license_server.crypto.keystore import KeyStore
from tests.verify_helpers import (
    assert_signed,
    attempts,
    issue,
    nonce,
    product,
    public_keys,
    reference_client,
)


@pytest.fixture
async def key(app_runtime):
    await product(app_runtime, local_key_days=7, grace_days=14)
    _, key = await issue(app_runtime)
    return key


async def post(client, **fields):
    response = await client.post("/api/v1/verify", data=fields)
    return response, await response.read()


async def test_answers_are_signed_over_the_exact_body(client, app_runtime, key):
    sent = nonce()
    response, body = await post(client, license_key=key, domain="shop.com", nonce=sent)
    header = response.headers["License-Signature"]
    assert header.startswith('keyid="') and 'algorithm="ed25519"' in header
    document = verify_answer(body, header, public_keys(app_runtime), nonce=sent, now=time.time())
    assert document["status"] == "active" and document["nonce"] == sent
    assert abs(document["server_time"] - time.time()) < 60


@pytest.mark.parametrize(
    ("fields", "content_type", "status"),
    [
        ({"domain": "shop.com", "nonce": "n" * 16}, None, 400),  # no key
        ({"license_key": "K", "domain": "shop.com", "nonce": "short"}, None, 400),
        ({"license_key": "K", "domain": "not a host", "nonce": "n" * 16}, None, 400),
        ({"license_key": "K" * 300, "domain": "shop.com", "nonce": "n" * 16}, None, 400),
        ({"license_key": "K", "domain": "shop.com", "nonce": "n" * 16}, "text/plain", 415),
    ],
)
async def test_undecided_requests_are_signed_problem_documents(
    client, app_runtime, fields, content_type, status
):
    if content_type:
        response = await client.post(
            "/api/v1/verify", data=json.dumps(fields), headers={"Content-Type": content_type}
        )
    else:
        response = await client.post("/api/v1/verify", data=fields)
    body = await response.read()
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert_signed(app_runtime, response, body)
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert (await attempts(app_runtime))[-1]["result"] == "malformed"


async def test_validation_errors_name_each_field_and_echo_the_nonce(client, app_runtime):
    sent = nonce()
    response, body = await post(client, domain="exa mple.com", ip="1.2.3", nonce=sent)
    problem = json.loads(body)
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"license_key", "domain", "ip"}
    assert problem["nonce"] == sent  # a client can still match the refusal to its request
    assert_signed(app_runtime, response, body)


async def test_json_that_is_not_an_object(client, app_runtime):
    response = await client.post("/api/v1/verify", json=["license_key"])
    problem = await response.json(content_type=None)
    assert response.status == 400
    assert problem["errors"] == [{"field": "body", "message": "the body is not a JSON object"}]


async def test_oversized_bodies_are_refused_with_413(client, app_runtime):
    response = await client.post(
        "/api/v1/verify", data={"license_key": "K", "domain": "a.com", "pad": "x" * 70_000}
    )
    body = await response.read()
    assert response.status == 413
    assert_signed(app_runtime, response, body)
    assert (await attempts(app_runtime))[-1]["reason"] == "http_413"


async def test_router_errors_on_the_endpoint_are_signed(client, app_runtime):
    response = await client.get("/api/v1/verify")
    body = await response.read()
    assert response.status == 405
    assert_signed(app_runtime, response, body)


async def test_client_rejects_a_tampered_answer(client, app_runtime, key):
    sent = nonce()
    response, body = await post(client, license_key=key, domain="shop.com", nonce=sent)
    tampered = body.replace(b'"active"', b'"revoked"', 1)
    with pytest.raises(AnswerRejected) as info:
        verify_answer(
            tampered,
            response.headers["License-Signature"],
            public_keys(app_runtime),
            nonce=sent,
            now=time.time(),
        )
    assert info.value.reason == "tampered"
    with pytest.raises(AnswerRejected, match="not signed"):
        verify_answer(body, None, public_keys(app_runtime), nonce=sent, now=time.time())


async def test_client_rejects_a_replayed_answer(client, app_runtime, key):
    first = nonce()
    response, body = await post(client, license_key=key, domain="shop.com", nonce=first)
    with pytest.raises(AnswerRejected) as info:
        verify_answer(
            body,
            response.headers["License-Signature"],
            public_keys(app_runtime),
            nonce=nonce(),  # the client's new request
            now=time.time(),
        )
    assert info.value.reason == "bad_nonce"


async def test_client_rejects_a_stale_answer(client, app_runtime, key):
    sent = nonce()
    response, body = await post(client, license_key=key, domain="shop.com", nonce=sent)
    with pytest.raises(AnswerRejected) as info:
        verify_answer(
            body,
            response.headers["License-Signature"],
            public_keys(app_runtime),
            nonce=sent,
            now=time.time() + 3600,
        )
    assert info.value.reason == "stale_response"


async def test_client_rejects_a_signature_by_an_unknown_key(client, app_runtime, key):
    sent = nonce()
    _, body = await post(client, license_key=key, domain="shop.com", nonce=sent)
    impostor = Ed25519PrivateKey.generate()
    header = (
        'keyid="impostor", algorithm="ed25519", '
        f'signature="{base64.b64encode(impostor.sign(body)).decode()}"'
    )
    with pytest.raises(AnswerRejected) as info:
        verify_answer(body, header, public_keys(app_runtime), nonce=sent, now=time.time())
    assert info.value.reason == "unknown_key_id"


async def test_local_key_claims(client, app_runtime, key):
    result = await reference_client(client, app_runtime).check(key, "www.Shop.com", ip="1.2.3.4")
    header = jwt.get_unverified_header(result.local_key)
    assert header["alg"] == "EdDSA" and header["kid"] == app_runtime.keyring.active.kid
    claims = result.claims
    assert claims["iss"] == "license-server" and claims["aud"] == "mymod"
    assert claims["exp"] - claims["iat"] == 7 * 86400
    assert claims["grace_until"] - claims["exp"] == 14 * 86400
    assert (claims["domain"], claims["ip"], claims["status"]) == ("shop.com", "1.2.3.4", "active")
    with pytest.raises(AnswerRejected, match="another domain"):
        verify_local_key(
            result.local_key, public_keys(app_runtime), license_key=key, domain="x.com",
            now=time.time(),
        )  # fmt: skip
    with pytest.raises(AnswerRejected, match="another license key"):
        verify_local_key(
            result.local_key, public_keys(app_runtime), license_key=key + "X",
            domain="shop.com", now=time.time(),
        )  # fmt: skip
    with pytest.raises(AnswerRejected, match="expired"):
        verify_local_key(
            result.local_key, public_keys(app_runtime), license_key=key, domain="shop.com",
            now=claims["exp"] + 1,
        )  # fmt: skip


async def test_rotated_key_still_verifies_old_local_keys(
    aiohttp_client, client, app_runtime, settings, key
):
    old = await reference_client(client, app_runtime).check(key, "shop.com")
    old_kid = app_runtime.keyring.active.kid
    store = KeyStore(settings.keys_dir)
    store.activate(store.rotate().kid)
    restarted = await aiohttp_client(create_app(settings))  # a server restarted after rotation
    runtime = restarted.app[RUNTIME]
    jwks = await (await restarted.get("/.well-known/jwks.json")).json()
    published = public_keys_from_jwks(jwks)
    assert old_kid in published and runtime.keyring.active.kid in published
    claims = verify_local_key(
        old.local_key, published, license_key=key, domain="shop.com", now=time.time()
    )
    assert claims["sub"] == old.claims["sub"]
    fresh = await reference_client(restarted, runtime).check(key, "shop.com")
    assert fresh.status == "active"
    assert jwt.get_unverified_header(fresh.local_key)["kid"] == runtime.keyring.active.kid
    assert runtime.keyring.active.kid != old_kid

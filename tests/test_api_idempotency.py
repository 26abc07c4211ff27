"""Idempotency-Key on the vendor API's POSTs (IETF httpapi idempotency-key draft): a replay
gets the first answer and does nothing; another payload under the same key is 422; the same
key while the first request runs is 409 (the first is held on an asyncio.Event, no sleeping);
records expire after 24 hours; the database row is the lock."""

from __future__ import annotations

import asyncio

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import api_keys as key_rows
from license_server.web.api import AFTER_CLAIM_HOOK
from license_server.web.api.idempotency import KEEP_SECONDS
from tests.api_helpers import LICENSE_BODY, PRODUCT_BODY, api, make_key


async def _count(client) -> int:
    return sum((await client.app[RUNTIME].licenses.count_by_status()).values())


async def test_a_replay_returns_the_first_answer_and_issues_nothing(client):
    _, headers = await make_key(client)
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    once = {**headers, "Idempotency-Key": "order-1001"}
    first, body = await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    assert first.status == 201
    again, replayed = await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    assert again.status == 201 and replayed == body  # the same license and key
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert await _count(client) == 1

    # Quoted as a structured-field string: the same key.
    quoted = {**headers, "Idempotency-Key": '"order-1001"'}
    again, replayed = await api(client, "POST", "/api/v1/licenses", quoted, LICENSE_BODY)
    assert replayed == body and await _count(client) == 1

    # Another payload under the same key: 422, nothing done.
    other = {**LICENSE_BODY, "licensee": "Someone Else"}
    response, problem = await api(client, "POST", "/api/v1/licenses", once, other)
    assert response.status == 422 and problem["title"] == "Idempotency key reused"
    assert await _count(client) == 1

    # Keys belong to their API key: another credential's same key is a new request.
    _, second = await make_key(client, name="store")
    response, _ = await api(client, "POST", "/api/v1/licenses",
                            {**second, "Idempotency-Key": "order-1001"}, LICENSE_BODY)  # fmt: skip
    assert response.status == 201 and await _count(client) == 2


async def test_refusals_are_replayed_and_invalid_requests_are_not_recorded(client):
    _, headers = await make_key(client)
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    once = {**headers, "Idempotency-Key": "suspend-1"}
    response, _ = await api(client, "POST", "/api/v1/licenses/12345/suspend", once)
    assert response.status == 404
    response, _ = await api(client, "POST", "/api/v1/licenses/12345/suspend", once)
    assert response.status == 404 and response.headers["Idempotent-Replayed"] == "true"

    # A body refused before anything ran: the client may correct it under the same key.
    fix = {**headers, "Idempotency-Key": "order-2"}
    response, _ = await api(client, "POST", "/api/v1/licenses", fix, {**LICENSE_BODY, "email": 1})
    assert response.status == 400
    response, _ = await api(client, "POST", "/api/v1/licenses", fix, LICENSE_BODY)
    assert response.status == 201 and "Idempotent-Replayed" not in response.headers


async def test_a_key_in_use_is_409_until_the_first_request_ends(aiohttp_client, settings):
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(request) -> None:
        if request.headers.get("X-Hold") == "yes":
            entered.set()
            await release.wait()

    app = create_app(settings)
    app[AFTER_CLAIM_HOOK] = hold
    client = await aiohttp_client(app)
    _, headers = await make_key(client)
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    once = {**headers, "Idempotency-Key": "order-3"}
    first = asyncio.create_task(
        api(client, "POST", "/api/v1/licenses", {**once, "X-Hold": "yes"}, LICENSE_BODY)
    )
    await entered.wait()  # the first request holds the key and has not issued yet
    response, problem = await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    assert response.status == 409 and problem["title"] == "Request in progress"
    assert response.headers["Retry-After"] == "1"
    assert await _count(client) == 0
    release.set()
    response, body = await first
    assert response.status == 201
    response, replayed = await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    assert replayed == body and await _count(client) == 1


async def test_records_expire_after_a_day(client):
    _, headers = await make_key(client)
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    once = {**headers, "Idempotency-Key": "order-4"}
    await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    runtime = client.app[RUNTIME]
    async with runtime.db.write() as conn:  # a day and a second ago
        await conn.execute(
            "UPDATE api_idempotency SET created_at = created_at - ?", (KEEP_SECONDS + 1,)
        )
    response, _ = await api(client, "POST", "/api/v1/licenses", once, LICENSE_BODY)
    assert response.status == 201 and "Idempotent-Replayed" not in response.headers
    assert await _count(client) == 2
    async with runtime.db.write() as conn:
        await conn.execute(
            "UPDATE api_idempotency SET created_at = created_at - ?", (KEEP_SECONDS + 1,)
        )
        assert await key_rows.prune_idempotency_keys(conn, runtime.licenses.now() - KEEP_SECONDS)


async def test_bad_idempotency_keys_are_400(client):
    _, headers = await make_key(client)
    for value in ("", "x" * 256, "caf\u00e9", "a b"):
        response, problem = await api(client, "POST", "/api/v1/products",
                                      {**headers, "Idempotency-Key": value},
                                      PRODUCT_BODY)  # fmt: skip
        assert response.status == 400, value
        assert problem["errors"][0] == {**problem["errors"][0], "location": "header",
                                        "field": "Idempotency-Key"}  # fmt: skip
    assert await client.app[RUNTIME].licenses.products() == []

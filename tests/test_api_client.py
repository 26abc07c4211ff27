"""The typed vendor API client (license_server/api_client.py) against the real server over
loopback HTTP, on either store: every method, problem documents mapped to `ApiProblem`, 429
retried after Retry-After (the limit set low in settings; the test's `sleep` records the wait
and empties the window instead of waiting), pages walked across boundaries, a retried POST
keeping its Idempotency-Key and getting the first answer, and the credential kept out of logs.
The later operations (PATCH license, reset reissues, bindings, attempts, bans with a 204
DELETE) each against the server; token mode with the server's settable clock (never a sleep):
one exchange, one refresh shared by concurrent calls, no refresh token sent twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from license_server.api_client import (
    ApiProblem,
    LicensePatch,
    LicenseSpec,
    ProductChanges,
    ProductSpec,
    VendorApi,
)  # fmt: skip
from license_server.app import create_app
from license_server.appkeys import RATE_LIMITER, RUNTIME
from license_server.db import api_tokens as token_rows
from license_server.licensing.actors import CLI
from license_server.licensing.models import Status
from license_server.staff.api_tokens import ACCESS_SECONDS, looks_like_access_token
from license_server.web.api import AFTER_CLAIM_HOOK, API_KEYS
from tests.api_helpers import make_key
from tests.conftest import with_sections
from tests.test_admin_attempts import T0, attempt, store
from tests.verify_helpers import nonce

SPEC = LicenseSpec(product="mymod", licensee="Smith & Sons", email="ops@smith.example")


class Sleeps:
    """A stand-in for asyncio.sleep: records each wait, runs `then`, never waits."""

    def __init__(self, then=None) -> None:
        self.waits: list[float] = []
        self._then = then

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._then is not None:
            await self._then()


def _base(client) -> str:
    return str(client.make_url("")).rstrip("/")


async def _vendor(client, scopes=("*",), **options) -> tuple[VendorApi, str]:
    secret, _ = await make_key(client, scopes, name="client-" + "-".join(scopes))
    return VendorApi(_base(client), secret, **options), secret


async def _count(client) -> int:
    return sum((await client.app[RUNTIME].licenses.count_by_status()).values())


@pytest.fixture
async def vendor(client):
    api, _ = await _vendor(client)
    async with api:
        await api.create_product(ProductSpec(code="mymod", name="My Module", seats=2))
        yield api


async def test_products(client, vendor):
    product = await vendor.product("MyMod")
    assert product.code == "mymod" and product.seats == 2 and product.has_whmcs_secret is False
    created = await vendor.create_product(
        ProductSpec(code="Other", name="Other", features=("pro",)), idempotency_key="p-other"
    )
    assert created.code == "other" and created.features == ["pro"]
    assert [p.code for p in await vendor.products()] == ["mymod", "other"]
    changed = await vendor.update_product("other", ProductChanges(seats=5, free_trial=True))
    assert changed.seats == 5 and changed.free_trial is True and changed.name == "Other"
    # Only the fields given are sent: the rest stay as they are.
    changed = await vendor.update_product("other", ProductChanges(name="Renamed"))
    assert changed.seats == 5 and changed.name == "Renamed"

    with pytest.raises(ApiProblem) as refused:
        await vendor.create_product(ProductSpec(code="mymod", name="Again"))
    assert refused.value.status == 409 and refused.value.slug == "conflict"
    for code in ("nope", "a/../../licenses", "x?y=1", "x" * 40):
        with pytest.raises(ApiProblem) as refused:
            await vendor.product(code)
        assert refused.value.status == 404 and refused.value.title == "Not Found", code
    with pytest.raises(ApiProblem) as refused:
        await vendor.update_product("nope", ProductChanges(seats=1))
    assert refused.value.status == 404
    with pytest.raises(ApiProblem) as refused:
        await vendor.update_product("mymod", ProductChanges())
    assert refused.value.status == 400 and "nothing to change" in refused.value.detail


async def test_a_license_through_every_action(client, vendor):
    created = await vendor.create_license(
        SPEC.model_copy(update={"domains": ("shop.example.com",), "expires": dt.date(2099, 1, 31)})
    )
    assert created.license_key.startswith("MYMOD-") and created.status is Status.PENDING
    assert created.rules.domains == ["shop.example.com"]
    assert created.expires_at == "2099-02-01T00:00:00Z"
    read = await vendor.license(created.id)
    assert read.licensee == "Smith & Sons" and not hasattr(read, "license_key")
    found = await vendor.license_of_key(created.license_key)
    assert found is not None and found.id == created.id
    assert await vendor.license_of_key("MYMOD-NOTAKEY") is None

    assert (await vendor.suspend(created.id)).status is Status.SUSPENDED
    assert (await vendor.unsuspend(created.id)).status is Status.PENDING
    assert (await vendor.renew(created.id, dt.date(2100, 12, 31))).expires_at == (
        "2101-01-01T00:00:00Z"
    )
    assert (await vendor.renew(created.id, None)).expires_at is None
    assert (await vendor.reissue(created.id)).reissue_count == 1
    assert (await vendor.revoke(created.id)).status is Status.REVOKED

    with pytest.raises(ApiProblem) as refused:
        await vendor.revoke(created.id)
    assert refused.value.status == 409 and refused.value.slug == "conflict"
    for call in (vendor.license(12345), vendor.suspend(12345), vendor.renew(12345, None)):
        with pytest.raises(ApiProblem) as refused:
            await call
        assert refused.value.status == 404


async def test_problem_documents_become_api_problems(client, vendor):
    before = await _count(client)
    # A body the client's model would refuse, built unchecked to reach the server's checks.
    bad = LicenseSpec.model_construct(product="mymod", licensee="  ", email="not-an-address")
    with pytest.raises(ApiProblem) as refused:
        await vendor.create_license(bad)
    problem = refused.value
    assert problem.status == 400 and problem.title == "Invalid request"
    assert problem.slug == "invalid-request" and problem.type.endswith("/invalid-request")
    assert problem.fields() == {"licensee", "email"}
    assert {(e.location, e.pointer) for e in problem.errors} == {
        ("body", "/licensee"), ("body", "/email")}  # fmt: skip
    with pytest.raises(ApiProblem) as refused:
        await vendor.create_license(SPEC.model_copy(update={"product": "nope"}))
    assert refused.value.fields() == {"product"}
    with pytest.raises(ApiProblem) as refused:
        await vendor.license_page(status="lost")
    assert refused.value.errors[0].location == "query" and refused.value.fields() == {"status"}
    with pytest.raises(ApiProblem) as refused:
        await vendor.license_page(cursor="!!")
    assert refused.value.fields() == {"cursor"}
    assert await _count(client) == before

    narrow, _ = await _vendor(client, ("product:read",))
    async with narrow:
        assert [p.code for p in await narrow.products()] == ["mymod"]
        with pytest.raises(ApiProblem) as refused:
            await narrow.create_license(SPEC)
        assert refused.value.status == 403 and refused.value.slug == "insufficient-scope"
    async with VendorApi(_base(client), "lsk_live_000000000000_" + "A" * 43) as unknown:
        with pytest.raises(ApiProblem) as refused:
            await unknown.products()
        assert refused.value.status == 401 and refused.value.title == "Unauthorized"


async def test_an_answer_that_is_no_problem_document_is_still_an_api_problem(aiohttp_server):
    app = web.Application()

    async def proxy_error(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html")

    app.router.add_get("/api/v1/products", proxy_error)
    server = await aiohttp_server(app)
    async with VendorApi(str(server.make_url("")), "lsk_live_x_y") as api:
        with pytest.raises(ApiProblem) as refused:
            await api.products()
    assert refused.value.status == 502 and "<html>" not in str(refused.value)


async def test_pages_are_walked_across_boundaries(client, vendor):
    issued = [(await vendor.create_license(SPEC)).id for _ in range(7)]
    first = await vendor.license_page(limit=3)
    assert len(first.items) == 3 and first.next_cursor is not None
    walked = [summary.id async for summary in vendor.licenses(page_size=3)]
    assert walked == sorted(issued, reverse=True)  # all seven, newest id first, none twice
    await vendor.suspend(issued[2])
    await vendor.suspend(issued[5])
    suspended = [s.id async for s in vendor.licenses(status=Status.SUSPENDED, page_size=1)]
    assert suspended == sorted([issued[2], issued[5]], reverse=True)
    assert [s.id async for s in vendor.licenses(product="nope")] == []
    assert len([s async for s in vendor.licenses(product="MYMOD", page_size=200)]) == 7


async def test_a_429_is_retried_after_retry_after(aiohttp_client, settings):
    client = await aiohttp_client(
        create_app(with_sections(settings, rate_limit={"per_api_key": "2/minute"}))
    )
    window = client.app[RATE_LIMITER]._strategy  # the in-memory moving window

    async def a_minute_later() -> None:
        window.reset()

    sleeps = Sleeps(then=a_minute_later)
    api, _ = await _vendor(client, sleep=sleeps)
    async with api:
        await api.products()
        await api.products()
        assert sleeps.waits == []
        assert await api.products() == []  # the third: 429, a wait, then answered
        assert len(sleeps.waits) == 1 and 1 <= sleeps.waits[0] <= 60

    # Out of retries: the 429 is raised, with its Retry-After.
    never = Sleeps()
    api, _ = await _vendor(client, sleep=never, retries=2)
    async with api:
        await api.products()
        await api.products()
        with pytest.raises(ApiProblem) as refused:
            await api.products()
    assert refused.value.status == 429 and refused.value.slug == "rate-limited"
    assert len(never.waits) == 2 and refused.value.retry_after >= 1

    # A Retry-After beyond max_wait is raised at once instead of slept.
    never = Sleeps()
    api, _ = await _vendor(client, sleep=never, max_wait=0.5)
    async with api:
        await api.products()
        await api.products()
        with pytest.raises(ApiProblem) as refused:
            await api.products()
    assert refused.value.status == 429 and never.waits == []


async def test_an_idempotency_key_replays_the_first_answer(client, vendor):
    first = await vendor.create_license(SPEC, idempotency_key="whmcs-service-1001")
    again = await vendor.create_license(SPEC, idempotency_key="whmcs-service-1001")
    assert again == first and await _count(client) == 1
    with pytest.raises(ApiProblem) as refused:
        await vendor.create_license(
            SPEC.model_copy(update={"licensee": "Someone Else"}),
            idempotency_key="whmcs-service-1001",
        )
    assert refused.value.status == 422 and refused.value.slug == "idempotency-key-reused"
    # Without a key of the caller's, each call is a new request (a fresh UUID each).
    await vendor.create_license(SPEC)
    await vendor.create_license(SPEC)
    assert await _count(client) == 3


def _drop_first(method: str, seen: list[tuple[str, str | None]]):
    """A middleware that lets the first `method` request run, then cuts the connection
    instead of answering: the change is made, the client never hears of it."""

    @web.middleware
    async def drop(request: web.Request, handler):
        response = await handler(request)
        if request.method == method:
            seen.append((request.path, request.headers.get("Idempotency-Key")))
            if len(seen) == 1:
                request.transport.close()
                raise ConnectionResetError("dropped by the test")
        return response

    return drop


async def test_a_post_retried_after_a_lost_answer_gets_the_first_answer(aiohttp_client, settings):
    seen: list[tuple[str, str | None]] = []
    app = create_app(settings)
    app.middlewares.append(_drop_first("POST", seen))
    client = await aiohttp_client(app)
    secret, _ = await make_key(client)
    sleeps = Sleeps()
    async with VendorApi(_base(client), secret, sleep=sleeps) as api:
        product = await api.create_product(ProductSpec(code="mymod", name="My Module"))
        assert product.code == "mymod"
        created = await api.create_license(SPEC)
        assert created.license_key.startswith("MYMOD-")
    # The product's POST was run once, its answer lost, and the retry (same key) replayed it.
    assert seen[0] == seen[1] and seen[0][1] is not None and len(sleeps.waits) == 1
    assert len(seen) == 3 and seen[2][1] != seen[0][1]  # the license: a key of its own
    assert [p.code for p in await client.app[RUNTIME].licenses.products()] == ["mymod"]
    assert await _count(client) == 1


async def test_a_patch_is_not_sent_again_after_a_lost_answer(aiohttp_client, settings):
    seen: list[tuple[str, str | None]] = []
    app = create_app(settings)
    app.middlewares.append(_drop_first("PATCH", seen))
    client = await aiohttp_client(app)
    secret, _ = await make_key(client)
    sleeps = Sleeps()
    async with VendorApi(_base(client), secret, sleep=sleeps) as api:
        await api.create_product(ProductSpec(code="mymod", name="My Module"))
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.update_product("mymod", ProductChanges(seats=9))
        assert (await api.product("mymod")).seats == 9  # it was applied, once
    assert len(seen) == 1 and seen[0][1] is None and sleeps.waits == []


async def _serve(app: web.Application):
    """The app on a loopback port as `run.py` serves it: a client that goes away does not
    cancel its request's handler (aiohttp's test server cancels it)."""
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_a_timed_out_post_is_retried_with_its_key_until_the_first_answers(settings):
    """The first try outlives the client's timeout; the retry, under the same key, is told the
    first still runs (409, Retry-After: 1); once the first has finished, the next retry gets
    its answer, replayed. One product is made."""
    release = asyncio.Event()
    held: list[str] = []

    async def hold_first(request: web.Request) -> None:
        held.append(request.headers["Idempotency-Key"])
        if len(held) == 1:
            await release.wait()

    app = create_app(settings)
    app[AFTER_CLAIM_HOOK] = hold_first
    runner, base = await _serve(app)
    try:
        runtime = app[RUNTIME]
        secret, _ = await make_key(SimpleNamespace(app=app))

        async def then() -> None:
            if len(sleeps.waits) < 2:  # after the timeout: the first still holds the key
                return
            release.set()  # after the 409: let the first finish and store its answer
            for _ in range(500):  # bounded; the outcome does not depend on speed
                async with runtime.db.read() as conn:
                    stored = await conn.fetch_value(
                        "SELECT COUNT(*) FROM api_idempotency WHERE status IS NOT NULL"
                    )
                if stored:
                    return
                await asyncio.sleep(0.01)

        sleeps = Sleeps(then=then)
        async with VendorApi(base, secret, timeout=1, sleep=sleeps) as api:
            product = await api.create_product(ProductSpec(code="mymod", name="My Module"))
        assert product.code == "mymod" and len(sleeps.waits) == 2
        assert sleeps.waits[1] == 1.0  # the 409's Retry-After
        assert len(held) == 1  # the retries never ran the handler again
        assert [p.code for p in await runtime.licenses.products()] == ["mymod"]
    finally:
        release.set()
        await runner.cleanup()


async def test_a_cancelled_request_releases_its_key_and_the_store_stays_writable(
    aiohttp_client, settings
):
    """aiohttp's test server cancels a handler whose client went away: the claim of its
    Idempotency-Key is released (the retry runs it), and a write cancelled while it was
    starting leaves no transaction open (it did on SQLite: every later write failed)."""
    held: list[str] = []

    async def hold_first(request: web.Request) -> None:
        held.append(request.headers["Idempotency-Key"])
        if len(held) == 1:
            await asyncio.Event().wait()  # until cancelled

    app = create_app(settings)
    app[AFTER_CLAIM_HOOK] = hold_first
    client = await aiohttp_client(app)
    secret, _ = await make_key(client)
    async with VendorApi(_base(client), secret, timeout=1, sleep=Sleeps()) as api:
        product = await api.create_product(ProductSpec(code="mymod", name="My Module"))
        assert product.code == "mymod" and held[0] == held[-1]
        assert (await api.create_license(SPEC)).product == "mymod"


async def test_a_write_cancelled_as_it_begins_leaves_the_store_writable(runtime):
    async def write() -> None:
        async with runtime.db.write() as conn:
            await conn.execute("DELETE FROM api_idempotency", ())

    task = asyncio.create_task(write())
    await asyncio.sleep(0)  # the task is now waiting for its BEGIN
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await write()  # a second write begins: no transaction was left open


async def test_the_credential_is_never_logged_or_shown(client, caplog):
    api, secret = await _vendor(client, retries=0)
    caplog.set_level(logging.DEBUG)
    async with api:
        await api.products()
        with pytest.raises(ApiProblem) as refused:
            await api.product("nope")
    assert secret not in caplog.text and secret not in repr(api)
    assert secret not in str(refused.value) and secret not in repr(refused.value)
    assert "GET /api/v1/products -> 200" in caplog.text


@pytest.mark.parametrize(
    "base_url",
    ["http://licenses.example.com", "ftp://127.0.0.1", "https://u:p@x.example", "/api",
     "https://x.example/?q=1"],
)  # fmt: skip
def test_a_base_url_that_would_leak_the_key_is_refused(base_url):
    with pytest.raises(ValueError, match="base_url"):
        VendorApi(base_url, "lsk_live_x_y")


@pytest.mark.parametrize("base_url", ["https://licenses.example.com/", "http://127.0.0.1:8080",
                                      "http://localhost", "http://[::1]:80"])  # fmt: skip
def test_https_and_loopback_base_urls_are_accepted(base_url):
    assert "***" in repr(VendorApi(base_url, "lsk_live_x_y"))


def test_a_key_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="api_key"):
        VendorApi("https://x.example", "lsk_live_x\r\nX-Evil: 1")


# -- the operations added since: license terms, reissues, bindings, attempts, bans -----------


async def _check(client, key: str, domain: str) -> dict:
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": domain, "nonce": nonce()}
    )
    return await response.json()


async def test_update_license_sends_only_the_fields_set(client, vendor):
    created = await vendor.create_license(
        SPEC.model_copy(update={"company": "Smith Ltd", "domains": ("shop.example.com",)})
    )
    changed = await vendor.update_license(
        created.id, LicensePatch(licensee="Jones", seats=5, domains=("other.example.com",))
    )
    assert changed.licensee == "Jones" and changed.company == "Smith Ltd"
    assert changed.seats == 5 and changed.rules.domains == ["other.example.com"]
    assert (await _check(client, created.license_key, "shop.example.com"))["reason"] == (
        "domain_not_allowed"
    )  # in force at the next check
    # `seats` set to None is sent as null: the product's seats again; the rest unchanged.
    changed = await vendor.update_license(created.id, LicensePatch(seats=None))
    assert changed.seats == 2 and changed.licensee == "Jones"

    before = await vendor.license(created.id)
    with pytest.raises(ApiProblem) as refused:
        await vendor.update_license(created.id, LicensePatch())
    assert refused.value.status == 400
    # Built unchecked to reach the server's checks: refused field by field, nothing written.
    for bad, field in ((LicensePatch.model_construct(seats=0), "seats"),
                       (LicensePatch.model_construct(licensee="   "), "licensee"),
                       (LicensePatch.model_construct(ips=("300.1.1.1",)), "ips")):  # fmt: skip
        with pytest.raises(ApiProblem) as refused:
            await vendor.update_license(created.id, bad)
        assert refused.value.status == 400 and refused.value.fields() == {field}
    assert await vendor.license(created.id) == before
    with pytest.raises(ApiProblem) as refused:
        await vendor.update_license(999, LicensePatch(notes="x"))
    assert refused.value.status == 404
    with pytest.raises(ValidationError):  # refused here first, nothing sent
        LicensePatch(seats=0)


async def test_reset_reissues_and_its_replay(client, vendor):
    created = await vendor.create_license(SPEC)
    await vendor.reissue(created.id)
    assert (await vendor.reissue(created.id)).reissue_count == 2
    reset = await vendor.reset_reissues(created.id, idempotency_key="reset-1")
    assert reset.reissue_count == 0
    await vendor.reissue(created.id)
    assert await vendor.reset_reissues(created.id, idempotency_key="reset-1") == reset  # replayed
    assert (await vendor.license(created.id)).reissue_count == 1
    with pytest.raises(ApiProblem) as refused:
        await vendor.reset_reissues(999)
    assert refused.value.status == 404


async def test_bindings_are_listed_and_one_is_released(client, vendor):
    created = await vendor.create_license(SPEC)
    assert await vendor.bindings(created.id) == []
    for domain in ("one.example.com", "two.example.com"):
        assert (await _check(client, created.license_key, domain))["status"] == "active"
    assert (await _check(client, created.license_key, "three.example.com"))["reason"] == (
        "seat_limit"
    )
    bound = await vendor.bindings(created.id)
    assert {b.value for b in bound if b.kind == "domain"} == {"one.example.com", "two.example.com"}
    released = await vendor.release_binding(created.id, "domain", "one.example.com")
    assert "one.example.com" not in [b.value for b in released.bindings]
    assert (await _check(client, created.license_key, "three.example.com"))["status"] == "active"
    with pytest.raises(ApiProblem) as refused:
        await vendor.release_binding(created.id, "domain", "one.example.com")
    assert refused.value.status == 404 and "holds no domain binding" in refused.value.detail
    with pytest.raises(ApiProblem) as refused:
        await vendor.bindings(999)
    assert refused.value.status == 404
    with pytest.raises(ValidationError):
        await vendor.release_binding(created.id, "site", "x")  # type: ignore[arg-type]


async def test_attempts_are_walked_and_filtered(client, vendor):
    rows = [attempt(at_ms=T0 + i * 1000, reason=f"r{i}", license_id=7 if i % 2 else None,
                    source_ip=f"203.0.113.{i}", result="active" if i % 3 else "invalid")
            for i in range(10)]  # fmt: skip
    await store(client, *rows)
    first = await vendor.attempt_page(limit=4)
    assert [a.reason for a in first.items] == ["r9", "r8", "r7", "r6"]
    assert first.items[0].at == "2026-03-01T12:00:09.000Z" and first.next_cursor is not None
    walked = [a.reason async for a in vendor.attempts(page_size=4)]
    assert walked == [f"r{i}" for i in range(9, -1, -1)]

    async def reasons(**filters) -> list[str]:
        return [a.reason async for a in vendor.attempts(page_size=3, **filters)]

    assert await reasons(license_id=7) == ["r9", "r7", "r5", "r3", "r1"]
    assert await reasons(result="invalid") == ["r9", "r6", "r3", "r0"]
    assert await reasons(ip="203.0.113.4") == ["r4"]
    assert len(await reasons(ip="203.0.113.0/24")) == 10
    noon = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert await reasons(since=noon + dt.timedelta(seconds=8),
                         until=noon + dt.timedelta(seconds=10)) == ["r9", "r8"]  # fmt: skip
    # An offset with a '+' survives the query string (not read as a space).
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert await reasons(since=dt.datetime(2026, 3, 1, 14, 0, 9, tzinfo=plus_two)) == ["r9"]
    for filters, field in (({"since": dt.datetime(2026, 3, 1)}, "since"),  # no time zone
                           ({"result": "bogus"}, "result"), ({"ip": "not-an-ip"}, "ip"),
                           ({"cursor": "nonsense"}, "cursor"),
                           ({"limit": 201}, "limit")):  # fmt: skip
        with pytest.raises(ApiProblem) as refused:
            await vendor.attempt_page(**filters)
        assert refused.value.status == 400 and refused.value.fields() == {field}, filters


async def test_bans_are_added_walked_and_lifted_with_a_204(client, vendor):
    created = await vendor.create_license(SPEC)
    ban = await vendor.ban("domain", "HTTPS://Shop.Example.com/x", "chargeback",
                           idempotency_key="ban-1")  # fmt: skip
    assert ban.value == "shop.example.com" and ban.reason == "chargeback"
    assert ban.created_by.startswith("api:lsk_live_")
    assert (await _check(client, created.license_key, "shop.example.com"))["status"] == "suspended"
    replay = await vendor.ban("domain", "HTTPS://Shop.Example.com/x", "chargeback",
                              idempotency_key="ban-1")  # fmt: skip
    assert replay == ban
    with pytest.raises(ApiProblem) as refused:
        await vendor.ban("domain", "shop.example.com")
    assert refused.value.status == 409 and "banned already" in refused.value.detail
    with pytest.raises(ApiProblem) as refused:
        await vendor.ban("ip", "999.1.1.1")
    assert refused.value.status == 400 and refused.value.fields() == {"value"}
    with pytest.raises(ValidationError):
        await vendor.ban("email", "x")  # type: ignore[arg-type]
    for i in range(4):
        await vendor.ban("ip", f"198.51.100.{i}")
    first = await vendor.ban_page(limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    walked = [b.value async for b in vendor.bans(page_size=2)]
    assert walked == [f"198.51.100.{i}" for i in range(3, -1, -1)] + ["shop.example.com"]

    assert await vendor.lift_ban(ban.id) is None  # a 204: no body
    assert (await _check(client, created.license_key, "shop.example.com"))["status"] == "active"
    with pytest.raises(ApiProblem) as refused:
        await vendor.lift_ban(ban.id)  # not a retry of a lost answer: a plain 404
    assert refused.value.status == 404
    assert len([b async for b in vendor.bans()]) == 4


async def test_a_delete_is_sent_again_after_a_lost_answer(aiohttp_client, settings):
    """DELETE is idempotent: resent after a connection error like a GET (here aiohttp itself
    resends it on the dropped keep-alive connection). The first try lifted the ban, so the
    resent one is told 404; `missing_ok` takes that as done."""
    seen: list[tuple[str, str | None]] = []
    app = create_app(settings)
    app.middlewares.append(_drop_first("DELETE", seen))
    client = await aiohttp_client(app)
    secret, _ = await make_key(client)
    async with VendorApi(_base(client), secret, sleep=Sleeps()) as api:
        ban = await api.ban("ip", "203.0.113.9")
        with pytest.raises(ApiProblem) as refused:
            await api.lift_ban(ban.id)
        assert refused.value.status == 404 and len(seen) == 2  # sent twice, lifted once
        assert [b async for b in api.bans()] == []
        again = await api.ban("ip", "203.0.113.9")
        seen.clear()
        assert await api.lift_ban(again.id, missing_ok=True) is None
        assert len(seen) == 2 and [b async for b in api.bans()] == []
        assert await api.lift_ban(again.id, missing_ok=True) is None
    async with client.app[RUNTIME].db.read() as conn:
        actions = await conn.fetch_all("SELECT action FROM audit_log WHERE action = 'ban.lift'")
    assert len(actions) == 2  # each ban lifted once


# -- token mode: the API key once per family, access tokens on every call --------------------


class TokenTraffic:
    """A middleware recording the vendor API traffic a token-mode client makes: each grant
    sent to the token endpoint (with the refresh token spent), and for every other call its
    status and whether its bearer credential was an access token (a JWT)."""

    def __init__(self) -> None:
        self.grants: list[str] = []
        self.spent: list[str] = []
        self.calls: list[tuple[int, bool]] = []
        self.drop_next_refresh = False

    def middleware(self):
        async def record(request: web.Request, handler):
            return await self.handle(request, handler)

        return web.middleware(record)

    async def handle(self, request: web.Request, handler):
        if request.path == "/api/v1/tokens" and request.method == "POST":
            body = json.loads(await request.read())  # cached: the handler reads it again
            self.grants.append(body["grant_type"])
            if "refresh_token" in body:
                self.spent.append(body["refresh_token"])
            response = await handler(request)
            if body["grant_type"] == "refresh_token" and self.drop_next_refresh:
                self.drop_next_refresh = False  # spent on the server, the answer lost
                request.transport.close()
                raise ConnectionResetError("dropped by the test")
            return response
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        response = await handler(request)
        self.calls.append((response.status, looks_like_access_token(bearer)))
        return response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _token_client(aiohttp_client, settings, **options):
    traffic = TokenTraffic()
    app = create_app(settings)
    app.middlewares.append(traffic.middleware())
    client = await aiohttp_client(app)
    secret, _ = await make_key(client)
    api = VendorApi(_base(client), secret, use_tokens=True, sleep=Sleeps(), **options)
    return client, api, traffic, secret


def _shift_server_clock(client, seconds: int) -> None:
    service = client.app[RUNTIME].licenses
    original = service.clock
    service.clock = lambda: original() + seconds


async def _families(client) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        return await conn.fetch_all(
            "SELECT id, revoked_at, revoked_reason FROM api_token_families ORDER BY id"
        )


async def test_token_mode_presents_the_api_key_once_and_access_tokens_after(
    aiohttp_client, settings
):
    client, api, traffic, _ = await _token_client(aiohttp_client, settings)
    async with api:
        await asyncio.gather(*(api.products() for _ in range(4)))  # concurrent: one exchange
        await api.create_product(ProductSpec(code="mymod", name="My Module"))
        assert (await api.create_license(SPEC)).product == "mymod"
    assert traffic.grants == ["api_key"]
    assert traffic.calls == [(200, True)] * 4 + [(201, True)] * 2
    [family] = await _families(client)
    assert family["revoked_at"] is None


async def test_concurrent_calls_refused_as_expired_share_one_refresh(aiohttp_client, settings):
    """The server's clock passes the access token's expiry (the client's own has not moved):
    five concurrent calls are each refused 401 invalid_token; one refresh serves them all and
    each is sent again, once."""
    client, api, traffic, _ = await _token_client(aiohttp_client, settings)
    async with api:
        await api.products()
        _shift_server_clock(client, ACCESS_SECONDS + 30)
        answers = await asyncio.gather(*(api.products() for _ in range(5)))
        assert answers == [[]] * 5
        assert traffic.grants == ["api_key", "refresh_token"]
        assert traffic.calls == [(200, True)] + [(401, True)] * 5 + [(200, True)] * 5
        await api.products()  # the new token serves on
    assert traffic.grants == ["api_key", "refresh_token"]
    [family] = await _families(client)
    assert family["revoked_at"] is None  # no refresh token was presented twice


async def test_a_token_about_to_expire_is_refreshed_before_it_is_sent(aiohttp_client, settings):
    clock = Clock()
    client, api, traffic, _ = await _token_client(aiohttp_client, settings, clock=clock)
    async with api:
        await api.products()
        clock.now += ACCESS_SECONDS - 61  # still more than the margin (60 s) left
        await api.products()
        assert traffic.grants == ["api_key"]
        clock.now += 1  # inside the margin: refreshed first, by one of the three
        await asyncio.gather(api.products(), api.products(), api.products())
        assert traffic.grants == ["api_key", "refresh_token"]
        clock.now += ACCESS_SECONDS - 60  # and again, from the new token's own expiry
        await api.products()
    assert traffic.grants == ["api_key", "refresh_token", "refresh_token"]
    assert all(status == 200 for status, _ in traffic.calls)  # never refused: no 401
    assert len(set(traffic.spent)) == len(traffic.spent) == 2
    [family] = await _families(client)
    assert family["revoked_at"] is None


async def test_a_revoked_family_falls_back_to_the_api_key_once(aiohttp_client, settings):
    client, api, traffic, _ = await _token_client(aiohttp_client, settings)
    async with api:
        await api.products()
        [family] = await _families(client)
        async with client.app[RUNTIME].db.write() as conn:
            await token_rows.revoke_family(conn, family["id"], 0, "test")
        assert await api.products() == []  # 401 revoked, refresh refused, a new family
        assert traffic.grants == ["api_key", "refresh_token", "api_key"]
        assert [status for status, _ in traffic.calls] == [200, 401, 200]
    assert [f["revoked_at"] is None for f in await _families(client)] == [False, True]


async def test_a_revoked_api_key_is_raised_not_retried_for_ever(aiohttp_client, settings):
    client, api, traffic, _ = await _token_client(aiohttp_client, settings)
    async with api:
        await api.products()
        [key] = await client.app[API_KEYS].all()
        await client.app[API_KEYS].revoke(CLI, key.id)  # its families end with it
        with pytest.raises(ApiProblem) as refused:
            await api.products()
        assert refused.value.status == 401 and "revoked" in refused.value.detail
    # The access token refused, the refresh refused, the key refused: once each, then raised.
    assert traffic.grants == ["api_key", "refresh_token", "api_key"]
    assert [status for status, _ in traffic.calls] == [200, 401]


async def test_a_refresh_whose_answer_is_lost_is_never_sent_again(aiohttp_client, settings):
    """The refresh token was spent on the server but the answer never came: sending it again
    would revoke the family (reuse). The client forgets it and exchanges the API key."""
    client, api, traffic, _ = await _token_client(aiohttp_client, settings)
    async with api:
        await api.products()
        _shift_server_clock(client, ACCESS_SECONDS + 30)
        traffic.drop_next_refresh = True
        assert await api.products() == []
    assert traffic.grants == ["api_key", "refresh_token", "api_key"]
    assert len(traffic.spent) == 1
    families = await _families(client)
    assert len(families) == 2 and all(f["revoked_at"] is None for f in families)


async def test_create_token_by_hand_and_token_secrets_kept_out_of_logs(
    aiohttp_client, settings, caplog
):
    caplog.set_level(logging.DEBUG)
    client, api, traffic, secret = await _token_client(aiohttp_client, settings)
    async with api:
        pair = await api.create_token()
        assert pair.token_type == "Bearer" and pair.expires_in == ACCESS_SECONDS
        following = await api.create_token(pair.refresh_token)
        assert following.refresh_token != pair.refresh_token
        with pytest.raises(ApiProblem) as refused:  # spent: the family is revoked
            await api.create_token(pair.refresh_token)
        assert refused.value.status == 401 and "already used" in refused.value.detail
        assert traffic.grants == ["api_key", "refresh_token", "refresh_token"]

        _shift_server_clock(client, ACCESS_SECONDS + 30)
        await api.products()  # token mode's own pair: exchanged, then refreshed after a 401
        await api.products()
        _shift_server_clock(client, ACCESS_SECONDS + 30)
        await api.products()
        access = api._VendorApi__access  # the test looks inside; nothing else can
        refresh = api._VendorApi__refresh
        assert access and refresh
    secrets = [secret, access, refresh, pair.access_token, pair.refresh_token]
    assert not any(s in caplog.text for s in secrets)
    assert not any(s in repr(api) for s in secrets) and "use_tokens=True" in repr(api)
    assert "access token refused; renewing it" in caplog.text


async def test_a_token_cut_short_by_its_keys_expiry_serves_half_its_life(aiohttp_client, settings):
    traffic = TokenTraffic()
    app = create_app(settings)
    app.middlewares.append(traffic.middleware())
    client = await aiohttp_client(app)
    secret, _ = await make_key(client, expires=dt.date.today() + dt.timedelta(days=2))
    [key] = await client.app[API_KEYS].all()
    client.app[RUNTIME].licenses.clock = lambda: key.expires_at - 100  # the key's last 100 s
    clock = Clock()
    async with VendorApi(_base(client), secret, use_tokens=True, clock=clock) as api:
        await api.products()
        clock.now += 49  # the margin is 50 s, not 60 s (that would renew on every call)
        await api.products()
        assert traffic.grants == ["api_key"]
        clock.now += 2
        await api.products()
    assert traffic.grants == ["api_key", "refresh_token"]

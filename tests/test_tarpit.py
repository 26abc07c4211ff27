"""The tarpit: every rate limit's refusal (429) is held before it is sent (web/tarpit.py, ASVS
4.0.3 V2.2.1), at most `refusals_held` at once, and never holds anything else up.

No test waits on the clock: the tarpit's sleep is replaced by a gate the test opens.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from license_server.app import create_app
from license_server.appkeys import TARPIT
from license_server.settings import Settings
from license_server.web.tarpit import Tarpit
from tests.conftest import with_sections
from tests.test_admin import Browser, setup_admin
from tests.test_portal import Customer

WRONG = {"email": "someone@example.org", "password": "Wrong-Horse-7-Battery"}
SAFETY = 30  # seconds: only a broken test ever waits this long


class Gate:
    """A stand-in for asyncio.sleep: records each hold and keeps it until `open()`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._open = asyncio.Event()
        self._entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self._entered.set()
        await self._open.wait()

    async def entered(self, count: int = 1) -> None:
        while len(self.seconds) < count:
            self._entered.clear()
            await asyncio.wait_for(self._entered.wait(), SAFETY)

    def open(self) -> None:
        self._open.set()


def gated(client) -> Gate:
    gate = Gate()
    client.app[TARPIT]._sleep = gate
    return gate


# -- the tarpit itself ------------------------------------------------------------------------


async def test_a_refusal_is_held_and_no_more_than_the_capacity_at_once():
    gate = Gate()
    tarpit = Tarpit(1.5, 2, gate)
    first, second = asyncio.create_task(tarpit.hold()), asyncio.create_task(tarpit.hold())
    await gate.entered(2)
    assert tarpit.holding == 2
    assert await asyncio.wait_for(tarpit.hold(), SAFETY) is False  # full: sent at once
    assert tarpit.sent_at_once == 1 and not first.done()
    gate.open()
    assert await first is True and await second is True
    assert gate.seconds == [1.5, 1.5]
    assert (tarpit.holding, tarpit.held) == (0, 2)
    assert await tarpit.hold() is True  # room again


async def test_a_hold_of_zero_seconds_holds_nothing():
    gate = Gate()
    tarpit = Tarpit(0, 256, gate)
    assert await tarpit.hold() is False
    assert gate.seconds == [] and tarpit.held == 0


async def test_a_cancelled_hold_gives_its_place_back():
    """A handler cancelled while held (server shutdown) does not keep its place."""
    gate = Gate()
    tarpit = Tarpit(1.0, 1, gate)
    held = asyncio.create_task(tarpit.hold())
    await gate.entered()
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    assert tarpit.holding == 0


def test_the_settings_and_their_bounds(settings):
    production = Settings(database=settings.database, keys_dir=settings.keys_dir).rate_limit
    assert (production.refusal_hold_seconds, production.refusals_held) == (1.0, 256)
    app = create_app(with_sections(settings, rate_limit={"refusal_hold_seconds": 2.5,
                                                         "refusals_held": 7}))  # fmt: skip
    assert (app[TARPIT].seconds, app[TARPIT].capacity) == (2.5, 7)
    for bad in ({"refusal_hold_seconds": -1}, {"refusal_hold_seconds": 31},
                {"refusals_held": -1}, {"refusals_held": "many"}):  # fmt: skip
        with pytest.raises(ValidationError):
            Settings.model_validate({**settings.model_dump(), "rate_limit": bad})


# -- the admin's sign-in ----------------------------------------------------------------------


async def _spend_sign_ins(visitor: Browser) -> None:
    for _ in range(5):
        response, _ = await visitor.post("/admin/login", WRONG)
        assert response.status == 400


async def _out_of_sign_ins(aiohttp_client, settings, **rate_limit) -> tuple:
    """A server with `rate_limit` settings changed, its tarpit gated, and a visitor whose
    address has spent its sign-in budget: (client, visitor, gate)."""
    client = await aiohttp_client(create_app(with_sections(settings, rate_limit=rate_limit)))
    visitor = Browser(client)
    await setup_admin(visitor)
    gate = gated(client)
    await _spend_sign_ins(visitor)
    return client, visitor, gate


async def test_a_throttled_sign_in_is_held_while_the_server_answers_others(client):
    visitor = Browser(client)
    await setup_admin(visitor)
    gate = gated(client)
    await _spend_sign_ins(visitor)
    assert gate.seconds == []  # failures within the budget are not held
    refused = asyncio.create_task(visitor.post("/admin/login", WRONG))
    await gate.entered()
    assert gate.seconds == [client.app[TARPIT].seconds] and not refused.done()
    # The event loop is free meanwhile: a check and a page are answered.
    check = await client.post(
        "/api/v1/verify",
        json={"license_key": "NOPE-1234", "domain": "a.example.com", "nonce": "n" * 20},
    )
    assert check.status == 200 and (await check.json())["status"] == "invalid"
    assert (await client.get("/healthz")).status == 200
    assert not refused.done()
    gate.open()
    response, page = await refused
    assert response.status == 429 and "Too many attempts" in page
    assert int(response.headers["Retry-After"]) > 0


async def test_past_the_capacity_refusals_are_sent_at_once(aiohttp_client, settings):
    client, visitor, gate = await _out_of_sign_ins(aiohttp_client, settings, refusals_held=2)
    held = [asyncio.create_task(visitor.post("/admin/login", WRONG)) for _ in range(2)]
    await gate.entered(2)
    # The third, with two held: a 429 at once, while the two still wait.
    response, _ = await asyncio.wait_for(visitor.post("/admin/login", WRONG), SAFETY)
    assert response.status == 429
    assert client.app[TARPIT].sent_at_once == 1
    assert not any(task.done() for task in held)
    metrics = await (await client.get("/metrics")).text()
    assert 'license_server_throttled_refusals_total{sent="at_once_tarpit_full"} 1.0' in metrics
    assert "license_server_throttled_refusals_holding 2.0" in metrics
    gate.open()
    assert [(await task)[0].status for task in held] == [429, 429]
    metrics = await (await client.get("/metrics")).text()
    assert 'license_server_throttled_refusals_total{sent="after_hold"} 2.0' in metrics
    assert "license_server_throttled_refusals_holding 0.0" in metrics


async def test_no_hold_when_switched_off(aiohttp_client, settings):
    _, visitor, gate = await _out_of_sign_ins(aiohttp_client, settings, refusal_hold_seconds=0)
    response, _ = await visitor.post("/admin/login", WRONG)
    assert response.status == 429 and gate.seconds == []


# -- the customer page ------------------------------------------------------------------------


async def test_the_customer_pages_refusal_of_a_guesser_is_held(aiohttp_client, settings):
    client = await aiohttp_client(
        create_app(with_sections(settings, portal={"guesses_per_hour": 2}))
    )
    gate = gated(client)
    customer = Customer(client)
    await customer.get()
    for guess in ("NOPE-1234", "NOPE-5678"):
        response, _ = await customer.post("/activate", {"license_key": guess})
        assert response.status == 400
    assert gate.seconds == []
    refused = asyncio.create_task(customer.post("/activate", {"license_key": "NOPE-9999"}))
    await gate.entered()
    assert not refused.done()
    gate.open()
    response, page = await refused
    assert response.status == 429 and "Too many attempts" in page


# -- verification and the vendor API ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "guess"),
    [
        ("/api/v1/verify", lambda n: {"license_key": f"NOPE-{n}", "domain": "a.example.com",
                                      "nonce": "n" * 20}),
        ("/modules/servers/licensing/verify.php",
         lambda n: {"licensekey": f"NOPE-{n}", "domain": "a.example.com"}),
    ],
)  # fmt: skip
async def test_verifications_429s_are_held_and_its_answers_are_not(
    aiohttp_client, settings, path, guess
):
    """Both endpoints: a key guesser out of guesses gets its 429 after the hold (signed and
    logged as before), while checks within their limits are answered without ever waiting."""
    client = await aiohttp_client(
        create_app(with_sections(settings, rate_limit={"unknown_key_per_ip": "2/minute"}))
    )
    gate = gated(client)
    for n in range(2):
        response = await client.post(path, data=guess(n))
        assert response.status == 200  # a decision ("invalid"), not a refusal
    assert gate.seconds == []
    refused = asyncio.create_task(client.post(path, data=guess(2)))
    await gate.entered()
    assert not refused.done()
    gate.open()
    response = await refused
    assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    if path == "/api/v1/verify":
        assert "License-Signature" in response.headers
        assert (await response.json())["status"] == 429


async def test_the_vendor_apis_429_is_held(aiohttp_client, settings):
    """A guessed API key spends the address's guesses; out of them, the 429 is held."""
    client = await aiohttp_client(
        create_app(with_sections(settings, rate_limit={"unknown_key_per_ip": "1/minute"}))
    )
    gate = gated(client)
    bearer = {"Authorization": "Bearer not-an-api-key"}
    assert (await client.get("/api/v1/licenses", headers=bearer)).status == 401
    refused = asyncio.create_task(client.get("/api/v1/licenses", headers=bearer))
    await gate.entered()
    assert not refused.done()
    gate.open()
    response = await refused
    assert response.status == 429 and response.content_type == "application/problem+json"

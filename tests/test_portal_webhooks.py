"""The customer page and the webhooks together (issue #14): what a customer does on /activate
reaches the vendor's systems as signed events, in the order it happened."""

from __future__ import annotations

from license_server.app import create_app
from license_server.appkeys import DELIVERER, WEBHOOK_ENDPOINTS, WEBHOOK_KEY
from license_server.licensing.actors import Actor, ActorKind
from license_server.staff.webhooks import EndpointSpec
from license_server.webhooks.signing import public_key_text
from tests.conftest import with_sections
from tests.test_portal import Customer, issue
from tests.webhook_receiver import Receiver, verify


async def test_a_customers_actions_reach_the_vendors_webhook_signed(aiohttp_client, settings):
    settings = with_sections(
        settings, webhooks={"allow_private_targets": True, "allow_http": True, "send": False}
    )
    client = await aiohttp_client(create_app(settings))
    receiver = await Receiver().start()
    try:
        await client.app[WEBHOOK_ENDPOINTS].create(
            Actor(ActorKind.STAFF, "1"),
            EndpointSpec(
                url=receiver.url,
                events=("domain.bound", "domain.released", "license.reissued"),
            ),
        )
        license_id, key = await issue(client)
        customer = Customer(client)
        await customer.sign_in(key)
        for path, form in (
            ("/activate/domains", {"domain": "https://Shop.Example.com/"}),
            ("/activate/release", {"domain": "shop.example.com"}),
            ("/activate/domains", {"domain": "new.example.com"}),
            ("/activate/reissue", {}),
        ):
            response, page = await customer.post(path, form)
            assert response.status == 200, page
        await client.app[DELIVERER].drain()
    finally:
        await receiver.stop()
    public = public_key_text(client.app[WEBHOOK_KEY])
    assert all(verify(public, got) for got in receiver.received)
    events = [got.event for got in receiver.received]
    assert [(e["type"], e["data"]["license_id"], e["data"].get("domain")) for e in events] == [
        ("domain.bound", license_id, "shop.example.com"),
        ("domain.released", license_id, "shop.example.com"),
        ("domain.bound", license_id, "new.example.com"),
        ("license.reissued", license_id, None),
    ]
    assert len({got.id for got in receiver.received}) == 4
    assert key not in b"".join(got.body for got in receiver.received).decode()

"""SIGKILL between a change and its delivery loses no event (issue #14).

The real server (`run.py serve`, tests/server_process.py) makes a change (a first check binds
a domain: domain.bound is written to the outbox in that transaction) while it sends nothing
(`[webhooks] send = false`, so nothing can have been delivered), and is then killed with
SIGKILL. Started again, sending, with the receiver up, it delivers every event that committed,
each once. The waits are for the receiver's requests (an event set on each arrival), bounded,
never a fixed sleep.

Why not sending rather than sending to nobody (as this test first did): a kill that lands while
a delivery attempt is out leaves that delivery leased to the dead process, and by design it is
sent again only when the lease runs out (the attempt's timeout + 30 s; test_webhooks.py tests
that), past this test's 30 s wait: the test failed whenever the kill hit such an attempt.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request

from license_server.runtime import open_runtime
from license_server.settings import Settings
from license_server.staff.webhooks import EndpointSpec, WebhookEndpoints
from tests.server_process import ServerProcess, query
from tests.services import free_port
from tests.test_webhooks import STAFF
from tests.verify_helpers import issue, product
from tests.webhook_receiver import Receiver, wait_for

ENV = {
    "LICENSE_SERVER_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    "LICENSE_SERVER_WEBHOOKS_ALLOW_HTTP": "true",
    "LICENSE_SERVER_WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
    "LICENSE_SERVER_WEBHOOKS_RETRY_CAP_SECONDS": "0.5",
    "LICENSE_SERVER_WEBHOOKS_POLL_SECONDS": "0.2",
    "LICENSE_SERVER_WEBHOOKS_MAX_ATTEMPTS": "100",
    "LICENSE_SERVER_WEBHOOKS_PAUSE_AFTER_FAILURES": "1000",
}
NOT_SENDING = {"LICENSE_SERVER_WEBHOOKS_SEND": "false"}
SENDING = {"LICENSE_SERVER_WEBHOOKS_SEND": "true"}


def _verify(server: ServerProcess, key: str) -> dict:
    body = json.dumps(
        {"license_key": key, "domain": "shop.example", "nonce": secrets.token_urlsafe(24)}
    ).encode()
    request = urllib.request.Request(
        f"{server.url}/api/v1/verify", data=body, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        return json.loads(answer.read())


async def test_sigkill_between_a_change_and_its_delivery_loses_no_event(tmp_path, database_url):
    keys_dir = tmp_path / "keys"
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    settings = Settings.model_validate(
        {"database": database_url, "keys_dir": keys_dir,
         "webhooks": {"allow_private_targets": True, "allow_http": True}}
    )  # fmt: skip
    async with open_runtime(settings) as rt:
        await product(rt)
        hooks = WebhookEndpoints(rt.licenses, settings.webhooks)
        await hooks.create(STAFF, EndpointSpec(url=url, events=("domain.bound", "license.created")))
        _, key = await issue(rt)
    server = ServerProcess(database_url, keys_dir, tmp_path, {**ENV, **NOT_SENDING})
    server.start()
    try:
        server.wait_ready()
        answer = await asyncio.to_thread(_verify, server, key)
        assert answer["status"] == "active"  # committed: the bind and its event
        events = query(database_url, "SELECT type FROM webhook_events ORDER BY id")
        assert [row[0] for row in events] == ["license.created", "domain.bound"]
        delivered = query(
            database_url, "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'delivered'"
        )
        assert delivered == [(0,)]  # nothing was sent
        server.kill()
        assert server.wait() == -9
        receiver = await Receiver().start(port)
        try:
            server.env.update(SENDING)
            server.start()
            server.wait_ready()
            await wait_for(receiver, 2)
            types = sorted(r.event["type"] for r in receiver.received)
            assert types == ["domain.bound", "license.created"]
            bound = receiver.of_type("domain.bound")[0].event["data"]
            assert bound["domain"] == "shop.example"
        finally:
            server.stop()
            await receiver.stop()
        states = query(database_url, "SELECT state FROM webhook_deliveries")
        assert sorted(row[0] for row in states) == ["delivered", "delivered"]
        assert len(receiver.received) == 2  # each once
    finally:
        if server.running:
            server.stop()

"""A real webhook receiver for tests: an aiohttp server on 127.0.0.1, a random port.

It records every request (headers and body) and answers with the statuses queued in
`answers` (200 when the queue is empty), so a test can make an endpoint fail, then recover.
`verify` checks a delivery's Standard Webhooks signature with the published public key, as a
receiver would (with `cryptography`, independent of the server's own signing code).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on every request
    answers: deque[int] = field(default_factory=deque)
    runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/redirect", self._redirect)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, body))
        self.arrived.set()
        status = self.answers.popleft() if self.answers else 200
        return web.Response(status=status, text="x" * 100)

    async def _redirect(self, request: web.Request) -> web.Response:
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, b""))
        raise web.HTTPFound(self.url)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.event["type"] == event_type]


def verify(public_key: str, received: Received) -> bool:
    """The receiver's check: `whpk_<base64>` key, `v1a,<base64>` signature over
    `{id}.{timestamp}.{body}`."""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[5:]))
    content = (
        f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode()
        + received.body
    )
    for item in received.headers["webhook-signature"].split():
        version, _, signature = item.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), content)
        except Exception:
            continue
        return True
    return False


async def wait_for(receiver: Receiver, count: int) -> None:
    """Until `count` requests have arrived (woken by each arrival, never polling on a timer);
    fails after 30 s instead of hanging."""
    async with asyncio.timeout(30):
        while len(receiver.received) < count:
            receiver.arrived.clear()
            await receiver.arrived.wait()

#!/usr/bin/env python3
"""Webhooks (issue #14): how fast the outbox delivers, and what webhooks cost verification.

1. **Outbox throughput**: N `license.created` events (one `issue_many`) in a fresh SQLite
   store, one endpoint subscribed, delivered by the real `Deliverer` (signing, leases, the
   attempt log) to a fast local receiver (an aiohttp handler answering 200) in the same
   process; events per second from the first claim to the last recorded result.
2. **Verify with webhooks off vs on**, in one run against one real server (`run.py serve`,
   bench/verify.py's dataset, server settings and wrk script): off = no endpoint (nothing is
   written for any event); on = an endpoint subscribed to every event, verification.refused
   included, on a local receiver. The load is bench/verify.py's mix of active checks plus one
   request in ten for a suspended license (refusals, so verification.refused is produced and
   delivered during the run, storm-bounded per license and minute). Rounds alternate off/on;
   medians are printed with the ratio on/off.

    .venv/bin/python bench/webhooks.py                 # defaults: 5,000 events, 10,000 licenses
    .venv/bin/python bench/webhooks.py --events 20000 --duration 10 --rounds 3

All traffic stays on 127.0.0.1; needs `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import verify as vb  # noqa: E402  (bench/verify.py: dataset, server env, wrk)

from license_server.licensing.actors import CLI  # noqa: E402
from license_server.licensing.lifecycle import Action  # noqa: E402
from license_server.licensing.specs import LicenseSpec, ProductSpec  # noqa: E402
from license_server.licensing.webhook_events import EVENT_TYPES  # noqa: E402
from license_server.runtime import open_runtime  # noqa: E402
from license_server.settings import Settings  # noqa: E402
from license_server.staff.webhooks import EndpointSpec, WebhookEndpoints  # noqa: E402
from license_server.webhooks.delivery import Deliverer  # noqa: E402
from license_server.webhooks.signing import load_webhook_key  # noqa: E402

HOOKS = {"allow_private_targets": True, "allow_http": True, "batch_size": 200}


class ReceiverThread:
    """A fast receiver (200 for every POST) on its own event loop in a thread."""

    def __init__(self) -> None:
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"

    def start(self) -> ReceiverThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def outbox_throughput(workdir: Path, events: int, receiver_url: str) -> tuple[float, int]:
    settings = Settings.model_validate(
        {"database": workdir / "outbox.db", "keys_dir": workdir / "outbox-keys",
         "webhooks": HOOKS}
    )  # fmt: skip
    async with open_runtime(settings) as rt:
        await rt.licenses.create_product(ProductSpec(code="bench", name="Bench"))
        endpoints = WebhookEndpoints(rt.licenses, settings.webhooks)
        await endpoints.create(CLI, EndpointSpec(url=receiver_url, events=("license.created",)))
        spec = LicenseSpec(product="bench", licensee="B", email="b@example.org")
        left = events
        while left:
            batch = min(left, 1000)
            await rt.licenses.issue_many(spec, batch, actor=CLI)
            left -= batch
        deliverer = Deliverer(rt.db, settings.webhooks, load_webhook_key(settings.keys_dir))
        started = time.perf_counter()
        sent = await deliverer.drain(max_rounds=events)
        seconds = time.perf_counter() - started
        await deliverer.close()
        async with rt.db.read() as conn:
            delivered = await conn.fetch_value(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'delivered'"
            )
    assert sent == events and delivered == events, (sent, delivered)
    return events / seconds, delivered


async def _suspend(settings: Settings, keys: list[str]) -> None:
    async with open_runtime(settings) as rt:
        for key in keys:
            license = await rt.licenses.license_by_key(key)
            await rt.licenses.apply(license.id, Action.SUSPEND, actor=CLI)


async def _subscribe(settings: Settings, url: str) -> None:
    async with open_runtime(settings) as rt:
        await WebhookEndpoints(rt.licenses, settings.webhooks).create(
            CLI, EndpointSpec(url=url, events=EVENT_TYPES)
        )


async def _set_enabled(settings: Settings, enabled: bool) -> None:
    async with open_runtime(settings) as rt, rt.db.write() as conn:
        await conn.execute("UPDATE webhook_endpoints SET enabled = ?", (enabled,))


def verify_on_off(args, workdir: Path, receiver: ReceiverThread) -> None:
    dataset = vb.prepare_dataset(args.licenses, None, workdir)
    settings = Settings.model_validate(
        {"database": dataset.database, "keys_dir": dataset.keys_dir, "webhooks": HOOKS}
    )
    refusing = [key for key, _ in dataset.sample[:100]]
    asyncio.run(_suspend(settings, refusing))
    active = dataset.sample[100:]
    lines = []
    for index, (key, domain) in enumerate(active):
        lines.append(vb._body(key, domain))
        if index % 9 == 0:
            lines.append(vb._body(refusing[index % len(refusing)], "refused.example"))
    bodies = workdir / "bodies.txt"
    bodies.write_text("\n".join(lines) + "\n")
    asyncio.run(_subscribe(settings, receiver.url))
    asyncio.run(_set_enabled(settings, False))
    port = vb._free_port()
    env = vb._server_env(dataset.database, dataset.keys_dir, port)
    env.update(
        LICENSE_SERVER_WEBHOOKS_ALLOW_PRIVATE_TARGETS="true",
        LICENSE_SERVER_WEBHOOKS_ALLOW_HTTP="true",
        LICENSE_SERVER_WEBHOOKS_POLL_SECONDS="1",
    )
    server = vb.Server("server", [sys.executable, str(ROOT / "run.py"), "serve"], env,
                       workdir / "server.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/verify"
    try:
        server.wait_until(lambda: _ready(port))
        figures: dict[str, list[float]] = {"off": [], "on": []}
        for round_number in range(args.rounds):
            for mode in ("off", "on"):
                asyncio.run(_set_enabled(settings, mode == "on"))
                vb.run_wrk(url, bodies, args.warmup, args.connections)
                before = receiver.count
                result = vb.run_wrk(url, bodies, args.duration, args.connections)
                figures[mode].append(result.requests_per_s)
                print(
                    f"  round {round_number + 1} webhooks {mode:<3} "
                    f"{result.requests_per_s:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  non-2xx {result.non_2xx}  "
                    f"events received {receiver.count - before:,}",
                    flush=True,
                )
        off, on = statistics.median(figures["off"]), statistics.median(figures["on"])
        print(f"verify, webhooks off: {off:,.0f} req/s; on: {on:,.0f} req/s; "
              f"on/off = {on / off:.3f}")  # fmt: skip
    finally:
        server.stop()


def _ready(port: int) -> bool:
    status, _ = vb._http("GET", f"http://127.0.0.1:{port}/readyz", timeout=1)
    return status == 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    receiver = ReceiverThread().start()
    try:
        with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
            workdir = Path(tmp)
            rate, delivered = asyncio.run(outbox_throughput(workdir, args.events, receiver.url))
            print(f"outbox: {delivered:,} events delivered at {rate:,.0f} events/s", flush=True)
            verify_on_off(args, workdir, receiver)
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()

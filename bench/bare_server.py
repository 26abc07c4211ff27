#!/usr/bin/env python3
"""The baseline of bench/verify.py: the cheapest aiohttp POST handler, served the same way.

It reads the request body and answers a small JSON document, under the same `web.run_app`
and logging level as `run.py serve` in the benchmark, so the ratio verify ÷ bare measures
what the license server adds on top of aiohttp itself.

    python bench/bare_server.py --port 8081
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from license_server.cli import EVENT_LOOPS, new_event_loop


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/v1/verify", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="as the server's setting event_loop (default: auto, the server's default)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    url = f"http://{args.host}:{args.port}"
    web.run_app(
        create_app(),
        host=args.host,
        port=args.port,
        loop=new_event_loop(args.event_loop),
        print=lambda _: print(f"bare server listening on {url}", flush=True),
    )


if __name__ == "__main__":
    main()

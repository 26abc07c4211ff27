"""The access log: masked addresses, escaped client text, one write per event-loop iteration."""

from __future__ import annotations

import asyncio
import io
import logging

from aiohttp import web

from license_server.web.access_log import BatchedLineWriter, MaskedAccessLogger


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class Request:
    def __init__(self, user_agent: str, remote: str = "203.0.113.77") -> None:
        self.remote = remote
        self.method = "POST"
        self.path = "/api/v1/verify"
        self.headers = {"User-Agent": user_agent}


class Response:
    status = 200
    body_length = 850


def logger_with(stream: CountingStream) -> MaskedAccessLogger:
    access = MaskedAccessLogger(logging.getLogger("aiohttp.access"), "")
    access.writer = BatchedLineWriter(stream)
    return access


async def test_lines_of_one_loop_iteration_go_out_in_one_write():
    stream = CountingStream()
    access = logger_with(stream)
    for _ in range(3):
        access.log(Request("WHMCS/8.9"), Response(), 0.0012)
    assert stream.writes == 0  # nothing on the request path
    await asyncio.sleep(0)
    assert stream.writes == 1
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(
        'INFO aiohttp.access: 203.0.113.0/24 "POST /api/v1/verify" 200 850 1.2ms "WHMCS/8.9"'
    )


async def test_client_text_cannot_forge_log_lines_or_terminal_codes():
    stream = CountingStream()
    access = logger_with(stream)
    access.log(Request("evil\x1b[31m\u2028caf\udce9"), Response(), 0.001)
    await asyncio.sleep(0)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "\x1b" not in line and "\u2028" not in line
    assert '"evil\\x1b[31m\\u2028caf\\udce9"' in line


async def test_a_broken_stream_does_not_break_serving():
    stream = CountingStream()
    stream.close()
    access = logger_with(stream)
    access.log(Request("x"), Response(), 0.001)
    await asyncio.sleep(0)  # the flush swallowed the ValueError of the closed stream


async def test_the_duration_is_measured_from_the_apps_middleware(monkeypatch):
    """aiohttp's figure comes from the loop's clock, which under uvloop (the default loop)
    ticks in whole milliseconds: every fast answer read "0.0ms". The line takes the time from
    when the app's middleware took the request (perf_counter) instead, when there is one."""
    from license_server.web import access_log

    class TimedRequest(Request):
        def __init__(self, started: float) -> None:
            super().__init__("WHMCS/8.9")
            self._state = {access_log.ANSWER_STARTED: started}

        def __getitem__(self, key):
            return self._state[key]

    monkeypatch.setattr(access_log.time, "perf_counter", lambda: 100.0003)
    stream = CountingStream()
    access = logger_with(stream)
    access.log(TimedRequest(100.0), Response(), 0.0)  # the loop's clock said 0
    access.log(Request("WHMCS/8.9"), Response(), 0.004)  # never reached the app: aiohttp's
    await asyncio.sleep(0)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(' 200 850 0.3ms "WHMCS/8.9"')
    assert second.endswith(' 200 850 4.0ms "WHMCS/8.9"')


async def test_the_middleware_stamps_every_request_it_answers(aiohttp_client, settings):
    from license_server.app import create_app
    from license_server.web.access_log import ANSWER_STARTED
    from license_server.web.middlewares import answer_middleware

    stamped = []

    async def handler(request):
        stamped.append(request[ANSWER_STARTED])
        return web.Response(text="ok")

    app = web.Application(middlewares=[answer_middleware])
    app.router.add_get("/x", handler)
    client = await aiohttp_client(app)
    assert (await client.get("/x")).status == 200
    assert len(stamped) == 1 and isinstance(stamped[0], float)
    assert answer_middleware in create_app(settings).middlewares  # the real app's one layer

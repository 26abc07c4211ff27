"""Hostile input at both verify endpoints (issue #11, item 2), served as in production.

The app runs under a real `web.AppRunner` with the production runner options
(`web.serving.runner_options`, no handler cancellation, as `run.py serve`), and requests go
over a raw socket so that exactly the bytes under test reach the server. Each malformed
request must get a signed 4xx problem document and exactly one `malformed` attempt row, leave
no ERROR and no traceback in the log, and the server must still answer a genuine check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.client import parse_signature_header
from license_server.settings import Settings
from license_server.web.serving import runner_options
from tests.conftest import with_sections
from tests.verify_helpers import attempts, issue, nonce, product, public_keys

NATIVE = "/api/v1/verify"
WHMCS = "/modules/servers/licensing/verify.php"
FORM = "application/x-www-form-urlencoded"
READ_TIMEOUT = 0.5


class Server:
    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner
        self.port = runner.addresses[0][1]
        self.runtime = runner.app[RUNTIME]

    async def send(self, raw: bytes) -> tuple[int, dict, bytes]:
        """Write `raw`, read one answer (its head, then Content-Length bytes of body)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await asyncio.wait_for(reader.readexactly(length), 10)
        finally:
            writer.close()
        return status, headers, body

    async def post(
        self, path: str, body: bytes, content_type: str | None = FORM, extra: bytes = b""
    ) -> tuple[int, dict, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n".encode()
        head += extra + f"Content-Length: {len(body)}\r\n\r\n".encode()
        return await self.send(head + body)


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[Server]:
    """The app as `run.py serve` runs it: a real AppRunner, the production runner options, no
    handler cancellation, on a free port of 127.0.0.1."""
    runner = web.AppRunner(create_app(settings), handler_cancellation=False, **runner_options())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Server(runner)
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(settings):
    settings = with_sections(settings, verify={"body_read_timeout_seconds": READ_TIMEOUT})
    async with served(settings) as server:
        yield server


@pytest.fixture
async def genuine_key(server) -> str:
    await product(server.runtime, seats=5)
    _, key = await issue(server.runtime)
    return key


def assert_signed_problem(server: Server, status: int, headers: dict, body: bytes) -> dict:
    assert 400 <= status < 500, (status, body[:200])
    assert headers["content-type"].startswith("application/problem+json")
    kid, signature = parse_signature_header(headers["license-signature"])
    public_keys(server.runtime)[kid].verify(signature, body)
    document = json.loads(body)
    assert document["status"] == status and document["title"] and document["detail"]
    return document


def assert_quiet(caplog) -> None:
    """No ERROR and no traceback: bad input is the client's error, not the server's."""
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


async def assert_still_answers(server: Server, key: str) -> None:
    fields = f"license_key={key}&domain=shop.example.com&nonce={nonce()}".encode()
    status, _, body = await server.post(NATIVE, fields)
    assert status == 200 and json.loads(body)["status"] == "active", body
    status, _, body = await server.post(WHMCS, f"licensekey={key}&domain=shop.example.com".encode())
    assert status == 200 and b"<status>Active</status>" in body, body


def multipart(parts: list[tuple[str | None, str]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, value in parts:
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    return out + f"--{boundary}--\r\n".encode()


KEY_FIELD = {NATIVE: "license_key", WHMCS: "licensekey"}


def cases(path: str) -> list:
    key = KEY_FIELD[path]
    deep = b"[" * 10_000
    return [
        pytest.param(path, deep, "application/json", b"", id="json-nested-10000"),
        pytest.param(
            path, b'{"a":' * 10_000, "application/json", b"", id="json-objects-nested-10000"
        ),
        pytest.param(
            path,
            b'{"%s": ' % key.encode() + b"7" * 5_000 + b"}",
            "application/json",
            b"",
            id="json-int-5000-digits",
        ),
        pytest.param(
            path,
            f"{key}=abc&domain=caf".encode() + b"\xe9.com",
            FORM,
            b"",
            id="form-raw-bytes-not-utf8",
        ),
        pytest.param(
            path,
            multipart([(key, "abc"), ("domain", "shop.com")]),
            "multipart/form-data",
            b"",
            id="multipart-without-boundary",
        ),
        pytest.param(
            path,
            multipart([(key, "abc"), (None, "nameless")]),
            "multipart/form-data; boundary=b0undary",
            b"",
            id="multipart-nameless-part",
        ),
        pytest.param(
            path,
            f"{key}=abc&domain=a.com&domain=b.com".encode(),
            FORM,
            b"",
            id="duplicate-field",
        ),
        pytest.param(path, b"license_key=abc", "text/plain", b"", id="wrong-content-type"),
        pytest.param(
            path,
            f"{key}=abc&domain=a.com".encode(),
            FORM,
            b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 64) for i in range(60)),
            id="header-flood",
        ),
        pytest.param(path, f"{key}=".encode() + b"x" * 70_000, FORM, b"", id="oversized-body"),
    ]


@pytest.mark.parametrize(("path", "body", "content_type", "extra"), cases(NATIVE) + cases(WHMCS))
async def test_malformed_request_is_a_signed_4xx_and_one_logged_attempt(
    server, genuine_key, caplog, path, body, content_type, extra
):
    caplog.set_level(logging.INFO)
    status, headers, answer = await server.post(path, body, content_type, extra)
    assert_signed_problem(server, status, headers, answer)
    rows = await attempts(server.runtime)
    assert len(rows) == 1
    assert rows[0]["result"] == "malformed" and rows[0]["endpoint"] in ("native", "whmcs")
    assert_quiet(caplog)
    await assert_still_answers(server, genuine_key)


@pytest.mark.parametrize("path", [NATIVE, WHMCS])
async def test_wrong_json_types_are_refused_field_by_field(server, genuine_key, caplog, path):
    body = json.dumps({"license_key": ["x"], "domain": {"a": 1}, "nonce": 5}).encode()
    status, headers, answer = await server.post(path, body, "application/json")
    assert_signed_problem(server, status, headers, answer)
    if path == NATIVE:
        fields = {error["field"] for error in json.loads(answer)["errors"]}
        assert {"license_key", "domain", "nonce"} <= fields
    assert [row["result"] for row in await attempts(server.runtime)] == ["malformed"]
    assert_quiet(caplog)


@pytest.mark.parametrize("path", [NATIVE, WHMCS])
async def test_a_stalled_body_is_cut_off_after_the_read_timeout(server, genuine_key, caplog, path):
    caplog.set_level(logging.INFO)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Type: {FORM}\r\nContent-Length: 500\r\n\r\n"
    ).encode()
    # Half a body, then nothing: the server answers 408 once verify.body_read_timeout_seconds
    # has passed (the wait is the server's own timer, not a sleep in the test).
    status, headers, answer = await server.send(head + b"licensekey=abc&domain=")
    assert status == 408
    assert_signed_problem(server, status, headers, answer)
    rows = await attempts(server.runtime)
    assert [(r["result"], r["reason"]) for r in rows] == [("malformed", "http_408")]
    assert_quiet(caplog)
    await assert_still_answers(server, genuine_key)


@pytest.mark.parametrize("path", [NATIVE, WHMCS])
async def test_a_client_that_disconnects_mid_body_leaves_no_traceback(
    server, genuine_key, caplog, path
):
    caplog.set_level(logging.INFO)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {FORM}\r\nContent-Length: 500\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + b"licensekey=abc")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # Whether the server saw the request before the connection went depends on scheduling;
    # either way nothing is logged as an error, and a started request is a malformed attempt.
    await assert_still_answers(server, genuine_key)
    rows = await attempts(server.runtime)
    assert all(r["result"] in ("malformed", "active") for r in rows)
    assert_quiet(caplog)


async def test_past_the_parsers_limits_a_request_is_refused_with_one_warning(
    server, genuine_key, caplog
):
    """Over aiohttp's own header limit the request never reaches the app: a plain 400, and
    one WARNING line instead of an ERROR with a traceback."""
    caplog.set_level(logging.INFO)
    flood = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(400))
    status, _, _ = await server.post(NATIVE, b"license_key=abc", FORM, flood)
    assert status == 400
    warnings = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert_quiet(caplog)
    await assert_still_answers(server, genuine_key)


async def test_duplicate_singleton_headers_are_refused_quietly(server, genuine_key, caplog):
    caplog.set_level(logging.INFO)
    status, _, _ = await server.post(
        WHMCS, b"licensekey=abc", FORM, b"Content-Type: application/json\r\n"
    )
    assert status == 400
    assert_quiet(caplog)
    await assert_still_answers(server, genuine_key)

#!/usr/bin/env python3
"""The floor of bench/verify.py: only what a verification cannot avoid, served the same way.

Per request it does what every check of the real server must do and nothing else:

1. read and parse the form body (`license_key`, `domain`, `nonce`) with `request.post()`;
2. build the JSON answer: status, the echoed nonce, server_time and fixed license facts of the
   real answer's size (a `local_key` token signed once at start-up stands in for the real one);
3. sign the exact answer bytes with Ed25519 (cryptography) and send the signature in a
   `License-Signature` header, beside the fixed security headers every answer carries;
4. log one attempt row durably in SQLite (WAL, `synchronous=FULL`) by group commit, and send
   the answer only after the COMMIT that contains its row has returned.

Group commit: rows wait in a list; when no commit is running the whole list becomes one batch,
written by one `run_in_executor` call on a single-thread executor that owns its own `sqlite3`
connection. So a batch is whatever was waiting when the previous commit returned, with no
fixed delay, and costs one thread hop there and back.

No license lookup, no decision, no rate limit, no access log (off as in bare_server.py): the
distance from this server to the real one is what the real one adds beyond the unavoidable.
The signing key is generated in memory at start-up and never written anywhere.

    python bench/floor_server.py --port 8082 --database /tmp/floor.db
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.cli import EVENT_LOOPS, new_event_loop
from license_server.web.middlewares import ANSWER_HEADERS

# The columns of the real server's verification_attempts, so a row costs what its row costs.
_SCHEMA = """CREATE TABLE IF NOT EXISTS verification_attempts (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    reported_ip TEXT NOT NULL DEFAULT '',
    domain_raw TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '',
    directory TEXT NOT NULL DEFAULT '',
    license_id INTEGER,
    key_hash BLOB,
    product TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    client_version TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    latency_us INTEGER NOT NULL
)"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS attempts_at ON verification_attempts (at_ms)",
    "CREATE INDEX IF NOT EXISTS attempts_license ON verification_attempts (license_id, at_ms)",
)
_INSERT = (
    "INSERT INTO verification_attempts (at_ms, endpoint, source_ip, domain_raw, domain, "
    "license_id, product, result, reason, user_agent, latency_us) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

KEY_ID = "floor-server-key"


class GroupCommitLog:
    """Durable attempt rows, one COMMIT per batch of whatever waited for the previous one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        # One thread owns the connection: sqlite3 objects never cross threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor-log")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Sequence[object], asyncio.Future[None]]] = []
        self._committing = False

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a COMMIT that returned survives power loss
        conn.execute(_SCHEMA)
        for statement in _INDEXES:
            conn.execute(statement)
        self._conn = conn

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def append(self, row: Sequence[object]) -> asyncio.Future[None]:
        """A future that is done once the row is committed."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((row, done))
        if not self._committing:
            self._start_batch()
        return done

    def _start_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        self._committing = True
        loop = asyncio.get_running_loop()
        commit = loop.run_in_executor(self._executor, self._commit, [row for row, _ in batch])
        commit.add_done_callback(lambda result: self._committed(batch, result))

    def _commit(self, rows: list[Sequence[object]]) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_INSERT, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _committed(self, batch, result: asyncio.Future[None]) -> None:
        self._committing = False
        error = None if result.cancelled() else result.exception()
        for _, done in batch:
            if done.done():  # its request was cancelled (client gone); the row is still kept
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
        if self._waiting:
            self._start_batch()


_LOG_KEY = web.AppKey("log", GroupCommitLog)
_SIGNER_KEY = web.AppKey("signer", Ed25519PrivateKey)
_LOCAL_KEY = web.AppKey("local_key", str)


def _fixed_local_key(signer: Ed25519PrivateKey) -> str:
    """A token of the real local key's shape and size, signed once: the floor signs one thing
    per request (the answer), so the real server's per-answer token is not part of it."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    compact = {"separators": (",", ":")}
    header = part(json.dumps({"alg": "EdDSA", "kid": KEY_ID, "typ": "JWT"}, **compact).encode())
    claims = {
        "iss": "license-server",
        "sub": "994619574895",
        "aud": "bench",
        "iat": 1_796_280_661,
        "exp": 1_796_885_461,
        "grace_until": 1_798_095_061,
        "status": "active",
        "domain": "customer-0000000.example.com",
        "ip": "127.0.0.1",
        "directory": "",
        "lkh": "hnw6teqdoIuGvKPN1zFoCxCCFqFVaPH4EENH7HdBneE",
        "features": [],
        "product": "bench",
        "licensee": "Customer 0",
    }
    payload = part(json.dumps(claims, **compact).encode())
    signature = part(signer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def _signed(app: web.Application, status: int, answer: dict) -> web.Response:
    body = json.dumps(answer, separators=(",", ":")).encode()
    signature = base64.b64encode(app[_SIGNER_KEY].sign(body)).decode("ascii")
    headers = {
        # The real server's own set beside the signature: the same size as its answers.
        **ANSWER_HEADERS,
        "License-Signature": f'keyid="{KEY_ID}", algorithm="ed25519", signature="{signature}"',
    }
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


async def handle(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        form = await request.post()
    except ValueError:  # not UTF-8 (UnicodeDecodeError), a broken multipart body
        return _signed(request.app, 400, {"status": "invalid", "reason": "bad_request"})
    key, domain, nonce = form.get("license_key"), form.get("domain"), form.get("nonce")
    if not (isinstance(key, str) and isinstance(domain, str) and isinstance(nonce, str)):
        return _signed(request.app, 400, {"status": "invalid", "reason": "bad_request"})
    now = time.time()
    answer = {
        "status": "active",
        "reason": "ok",
        "nonce": nonce,
        "server_time": int(now),
        "license": {
            "product": "bench",
            "licensee": "Customer 0",
            "company": "",
            "expires_at": None,
            "domains": [domain],
            "ips": [],
            "directories": [],
            "features": [],
            "seats": 1,
        },
        "local_key": request.app[_LOCAL_KEY],
    }
    response = _signed(request.app, 200, answer)
    row = (
        int(now * 1000),
        "verify",
        request.remote or "",
        domain,
        domain.lower(),
        1,
        "bench",
        "active",
        "ok",
        request.headers.get("User-Agent", ""),
        int((time.perf_counter() - started) * 1_000_000),
    )
    try:
        await request.app[_LOG_KEY].append(row)
    except sqlite3.Error:
        return web.Response(status=503, text="attempt log unavailable")
    return response


def create_app(database: Path) -> web.Application:
    app = web.Application()
    signer = Ed25519PrivateKey.generate()
    app[_SIGNER_KEY] = signer
    app[_LOCAL_KEY] = _fixed_local_key(signer)

    async def attempt_log(app: web.Application):
        log = GroupCommitLog(database)
        await log.open()
        app[_LOG_KEY] = log
        yield
        await log.close()

    app.cleanup_ctx.append(attempt_log)
    app.router.add_post("/api/v1/verify", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="as the server's setting event_loop (default: auto, the server's default)",
    )
    parser.add_argument("--database", type=Path, required=True, help="SQLite file (created)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    url = f"http://{args.host}:{args.port}"
    web.run_app(
        create_app(args.database),
        host=args.host,
        port=args.port,
        loop=new_event_loop(args.event_loop),
        print=lambda _: print(f"floor server listening on {url}", flush=True),
    )


if __name__ == "__main__":
    main()

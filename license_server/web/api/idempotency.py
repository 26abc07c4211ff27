"""`Idempotency-Key` on every POST of the vendor API (IETF httpapi idempotency-key draft).

A request carrying the header is recorded before it runs: a row (API key, idempotency key,
SHA-256 fingerprint of method, path and body) inserted under a UNIQUE constraint. The database
row is the lock, so this holds across every instance (PostgreSQL) and process; no in-memory set
is consulted. Then:

- the first request runs, and its answer (status, Location, body) is stored in the row;
- the same key with the same request again gets that stored answer (a replay; nothing runs);
- the same key with another request (method, path or body differ) is refused: 422;
- the same key while the first is still running is refused: 409 (retry later);
- an answer that is a 5xx, or a request that failed before answering, deletes the row, so the
  client may retry with the same key; a request refused before it ran (400 invalid body, 401,
  403, 429) records nothing.

Records are kept 24 hours: older rows are pruned (at most once a minute per process, in the
transaction of a new claim) and an expired row found in the way is replaced. What a crash
between the change and the stored answer leaves: a row without an answer, which answers 409
until it expires; the change itself is committed (or not) whole by the service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from license_server.db import api_keys as rows
from license_server.db.database import Database
from license_server.db.errors import UniqueViolation
from license_server.web.api.problems import ApiProblem, field_error, invalid

HEADER = "Idempotency-Key"
KEEP_SECONDS = 24 * 3600
PRUNE_EVERY_SECONDS = 60
MAX_KEY_LENGTH = 255
# Answer headers worth replaying (the rest are recomputed by the middleware).
KEPT_HEADERS = ("Location",)


@dataclass(frozen=True, slots=True)
class Claim:
    row_id: int


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key (a structured-field string, quoted or not), or None."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    value = values[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if (
        len(values) > 1
        or not 1 <= len(value) <= MAX_KEY_LENGTH
        or any(not 0x21 <= ord(c) <= 0x7E or c in '"\\' for c in value)
    ):
        raise invalid(
            "header",
            [field_error("header", HEADER, f"one value of 1-{MAX_KEY_LENGTH} visible ASCII "
                         "characters (a UUID is a good choice)")],
        )  # fmt: skip
    return value


def fingerprint(request: web.Request, body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path_qs.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


class IdempotencyStore:
    def __init__(self, db: Database, now: Callable[[], int]) -> None:
        self._db = db
        self._now = now
        self._pruned_at = 0

    async def begin(self, api_key_id: int, key: str, print_: bytes) -> Claim | web.Response:
        """A claim to run the request, or the answer to give instead (a replay, 409, 422)."""
        for _ in range(3):
            now = self._now()
            prune = now - self._pruned_at >= PRUNE_EVERY_SECONDS

            async def claim(conn, now=now, prune=prune) -> int:
                if prune:
                    await rows.prune_idempotency_keys(conn, now - KEEP_SECONDS)
                return await rows.claim_idempotency_key(conn, api_key_id, key, print_, now)

            try:
                row_id = await self._db.transaction(claim)
            except UniqueViolation:
                async with self._db.read() as conn:
                    record = await rows.idempotency_record(conn, api_key_id, key)
                if record is None:
                    continue  # released in between: claim it again
                if record["created_at"] < now - KEEP_SECONDS:
                    async with self._db.write() as conn:  # expired, not yet pruned
                        await rows.release_idempotency_key(conn, record["id"])
                    continue
                return _answer_for(record, print_)
            if prune:
                self._pruned_at = now
            return Claim(row_id)
        raise ApiProblem(409, "Conflict", "The idempotency key is busy; retry.", slug="conflict")

    async def finish(self, claim: Claim, response: web.Response) -> None:
        if response.status >= 500 or not isinstance(response.body, bytes):
            await self.abandon(claim)
            return
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        async with self._db.write() as conn:
            await rows.store_idempotent_answer(
                conn, claim.row_id, response.status, json.dumps(kept), response.body
            )

    async def abandon(self, claim: Claim) -> None:
        async with self._db.write() as conn:
            await rows.release_idempotency_key(conn, claim.row_id)

    async def run(self, claim: Claim, work: Callable[[], Awaitable[web.Response]]) -> web.Response:
        try:
            response = await work()
        except ApiProblem as problem:  # an answer like any other (404, 409 ...)
            response = problem.response()
        except BaseException:
            await self.abandon(claim)
            raise
        await self.finish(claim, response)
        return response


def _answer_for(record: dict, print_: bytes) -> web.Response:
    if bytes(record["fingerprint"]) != print_:
        raise ApiProblem(
            422, "Idempotency key reused",
            "This Idempotency-Key was used for a different request (method, path or body); "
            "use a new key for a new request.", slug="idempotency-key-reused",
        )  # fmt: skip
    if record["status"] is None:
        raise ApiProblem(
            409, "Request in progress",
            "A request with this Idempotency-Key is still being processed; retry later.",
            slug="idempotency-key-in-use", headers={"Retry-After": "1"},
        )  # fmt: skip
    status = int(record["status"])
    headers = json.loads(record["headers"])
    headers["Idempotent-Replayed"] = "true"
    return web.Response(
        status=status, body=bytes(record["body"]), headers=headers,
        content_type="application/problem+json" if status >= 400 else "application/json",
    )  # fmt: skip

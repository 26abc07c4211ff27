"""The verification attempt log: one row per attempt, group commit, answer after commit, pruning."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import astuple

import pytest

from license_server.app import MAX_REQUEST_BYTES, create_app
from license_server.appkeys import RUNTIME
from license_server.client import verify_answer
from license_server.db import attempts as attempt_rows
from license_server.db.database import Database, open_database
from license_server.db.errors import DatabaseError
from license_server.db.sqlite import SqliteDatabase, WriterTurn, writer_turn_path
from license_server.licensing.attempt_log import Attempt, AttemptLog
from license_server.licensing.specs import LicenseSpec
from license_server.settings import AttemptLogSettings, RateLimitSettings, Settings
from tests import store_helpers
from tests.conftest import PRODUCT, with_sections
from tests.verify_helpers import assert_signed, nonce, public_keys

VERIFY = "/api/v1/verify"
GENEROUS = RateLimitSettings(
    per_ip="100000/minute", per_key="100000/minute", unknown_key_per_ip="100000/minute"
)


async def issue_key(runtime) -> tuple[int, str]:
    await runtime.licenses.create_product(PRODUCT)
    license, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="A", email="a@example.org")
    )
    return license.id, key


async def rows(db: Database, table: str = "verification_attempts") -> list[dict]:
    return await store_helpers.rows(
        db, table, order="at_ms" if table == "verification_attempts" else ""
    )


async def app_with(aiohttp_client, settings: Settings, **sections):
    client = await aiohttp_client(create_app(with_sections(settings, **sections)))
    return client, client.app[RUNTIME]


# -- one row per attempt, with the right columns --------------------------------------------


async def test_an_accepted_check_is_logged_with_the_license_and_no_key_hash(client, app_runtime):
    license_id, key = await issue_key(app_runtime)
    sent = nonce()
    before = int(time.time() * 1000)
    response = await client.post(
        VERIFY,
        json={
            "license_key": key,
            "domain": "WWW.Example.COM:8080",
            "ip": "198.51.100.7",
            "directory": "/var/www/whmcs",
            "product": "mymod",
            "client_version": "php-client-2.1",
            "nonce": sent,
        },
        headers={"User-Agent": "WHMCS-Module/8.9 (test)"},
    )
    body = await response.read()
    after = int(time.time() * 1000)
    assert response.status == 200
    document = verify_answer(
        body,
        response.headers["License-Signature"],
        public_keys(app_runtime),
        nonce=sent,
        now=time.time(),
    )
    assert document["status"] == "active"

    (row,) = await rows(app_runtime.db)
    assert before <= row["at_ms"] <= after
    assert row["endpoint"] == "native"
    assert row["source_ip"] == "127.0.0.1"
    assert row["reported_ip"] == "198.51.100.7"
    assert row["domain_raw"] == "WWW.Example.COM:8080"
    assert row["domain"] == "example.com"
    assert row["directory"] == "/var/www/whmcs"
    assert row["license_id"] == license_id
    assert row["key_hash"] is None
    assert row["product"] == "mymod"
    assert (row["result"], row["reason"]) == ("active", document["reason"])
    assert row["client_version"] == "php-client-2.1"
    assert row["user_agent"] == "WHMCS-Module/8.9 (test)"
    assert row["latency_us"] >= 0


async def test_a_refused_genuine_key_keeps_its_license_id(client, app_runtime):
    license_id, key = await issue_key(app_runtime)
    await app_runtime.licenses.create_product(PRODUCT.model_copy(update={"code": "other"}))
    response = await client.post(
        VERIFY,
        data={"license_key": key, "domain": "shop.com", "product": "other", "nonce": nonce()},
    )
    document = await response.json()
    assert response.status == 200 and document["status"] == "invalid"
    (row,) = await rows(app_runtime.db)
    assert row["license_id"] == license_id and row["key_hash"] is None
    assert (row["result"], row["reason"]) == ("invalid", document["reason"])


async def test_unknown_keys_are_logged_by_hash_and_never_in_clear(client, app_runtime):
    _, genuine = await issue_key(app_runtime)
    unknown = "LEGACY" + secrets.token_hex(10).upper()
    forged = genuine[:-10] + ("A" if genuine[-10] != "A" else "B") + genuine[-9:]
    for key in (unknown, unknown, forged):
        response = await client.post(
            VERIFY,
            data={"license_key": key, "domain": "shop.com", "nonce": nonce()},
            headers={"User-Agent": "probe/1"},
        )
        assert response.status == 200 and (await response.json())["status"] == "invalid"
    # Malformed requests carrying the keys must not leak them either.
    await client.post(VERIFY, data={"license_key": unknown, "domain": "shop.com", "nonce": "x"})
    await client.post(VERIFY, json={"license_key": forged, "domain": "", "nonce": nonce()})
    await client.post(VERIFY, json={"license_key": genuine, "nonce": nonce()})

    logged = await rows(app_runtime.db)
    assert [(r["result"], r["reason"]) for r in logged] == [
        ("invalid", "unknown_key"),
        ("invalid", "unknown_key"),
        ("invalid", "bad_signature"),
        ("malformed", "invalid_fields"),
        ("malformed", "invalid_fields"),
        ("malformed", "invalid_fields"),
    ]
    decided = logged[:3]
    for row in decided:
        assert row["license_id"] is None
        assert isinstance(row["key_hash"], bytes) and len(row["key_hash"]) == 32
        assert row["domain"] == "shop.com" and row["user_agent"] == "probe/1"
    # The same unknown key retried has the same hash (so it can be spotted); another differs.
    assert decided[0]["key_hash"] == decided[1]["key_hash"] != decided[2]["key_hash"]
    for row in logged[3:]:
        assert row["license_id"] is None and row["key_hash"] is None

    # No key, genuine or not, in any text or blob column of any table.
    for table in await store_helpers.table_names(app_runtime.db):
        for row in await rows(app_runtime.db, table):
            for column, value in row.items():
                for key in (unknown, forged, genuine):
                    if isinstance(value, str):
                        assert key.lower() not in value.lower(), (table, column)
                    elif isinstance(value, bytes):
                        assert key.encode() not in value, (table, column)


@pytest.mark.parametrize(
    ("send", "status", "reason"),
    [
        pytest.param(
            {"data": {"domain": "shop.com", "nonce": "n" * 16}},
            400,
            "invalid_fields",
            id="missing-key",
        ),
        pytest.param(
            {"data": {"license_key": "K", "domain": "shop.com", "nonce": "short"}},
            400,
            "invalid_fields",
            id="bad-nonce",
        ),
        pytest.param({"json": ["license_key", "domain"]}, 400, "bad_body", id="json-not-an-object"),
        pytest.param(
            {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_body",
            id="json-broken",
        ),
        pytest.param(
            {"data": b"license_key=K", "headers": {"Content-Type": "text/plain"}},
            415,
            "http_415",
            id="wrong-content-type",
        ),
        pytest.param(
            {"json": {"license_key": "K", "pad": "x" * MAX_REQUEST_BYTES}},
            413,
            "http_413",
            id="json-too-large",
        ),
        pytest.param(
            {"data": {"license_key": "K", "pad": "x" * MAX_REQUEST_BYTES}},
            413,
            "http_413",
            id="form-too-large",
        ),
    ],
)
async def test_malformed_requests_are_logged(client, app_runtime, send, status, reason):
    response = await client.post(VERIFY, **send)
    body = await response.read()
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert_signed(app_runtime, response, body)
    assert json.loads(body)["status"] == status
    (row,) = await rows(app_runtime.db)
    assert (row["result"], row["reason"]) == ("malformed", reason)
    assert row["source_ip"] == "127.0.0.1" and row["endpoint"] == "native"
    assert row["license_id"] is None and row["key_hash"] is None
    assert row["domain"] == "" and row["latency_us"] >= 0


async def test_a_malformed_request_keeps_the_readable_fields(client, app_runtime):
    response = await client.post(
        VERIFY,
        data={
            "license_key": "K",
            "domain": "WWW.Shop.COM",
            "ip": "192.0.2.1",
            "client_version": "v" * 100,
            "nonce": "bad nonce!",
        },
        headers={"User-Agent": "u" * 300},
    )
    assert response.status == 400
    (row,) = await rows(app_runtime.db)
    assert row["domain_raw"] == "WWW.Shop.COM" and row["domain"] == ""
    assert row["reported_ip"] == "192.0.2.1"
    assert row["client_version"] == "v" * 64  # cut to size
    assert row["user_agent"] == "u" * 256


async def test_a_rate_limited_attempt_is_logged(aiohttp_client, settings):
    client, runtime = await app_with(
        aiohttp_client, settings, rate_limit=RateLimitSettings(per_ip="1/minute")
    )
    fields = {"license_key": "K", "domain": "shop.com", "nonce": nonce()}
    headers = {"User-Agent": "busy/1"}
    assert (await client.post(VERIFY, data=fields, headers=headers)).status == 200
    assert (await client.post(VERIFY, data=fields, headers=headers)).status == 429
    first, limited = await rows(runtime.db)
    assert (first["result"], first["reason"]) == ("invalid", "unknown_key")
    assert (limited["result"], limited["reason"]) == ("rate_limited", "per-ip")
    assert limited["user_agent"] == "busy/1" and limited["source_ip"] == "127.0.0.1"
    assert limited["license_id"] is None and limited["key_hash"] is None
    assert limited["domain_raw"] == "" and limited["latency_us"] >= 0


async def test_a_check_refused_by_the_per_key_limit_is_attributed_to_its_license(
    aiohttp_client, settings
):
    """Its signature verified, so the key names its license: a flood of checks of one key is
    counted against that license, not lost as anonymous 429s (the flooding detector's input)."""
    client, runtime = await app_with(
        aiohttp_client, settings, rate_limit=RateLimitSettings(per_key="1/minute")
    )
    license_id, key = await issue_key(runtime)
    fields = {"license_key": key, "domain": "shop.com", "nonce": nonce()}
    assert (await client.post(VERIFY, data=fields)).status == 200
    assert (await client.post(VERIFY, data={**fields, "nonce": nonce()})).status == 429
    first, limited = await rows(runtime.db)
    assert (limited["result"], limited["reason"]) == ("rate_limited", "per-key")
    assert limited["license_id"] == first["license_id"] == license_id


# -- group commit ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_max_rows", [500, 7])
async def test_concurrent_attempts_are_all_answered_and_all_logged(
    aiohttp_client, settings, monkeypatch, batch_max_rows
):
    batches: list[int] = []
    client, runtime = await app_with(
        aiohttp_client,
        settings,
        rate_limit=GENEROUS,
        attempt_log=AttemptLogSettings(batch_max_rows=batch_max_rows),
    )
    original = runtime.db.attempts.write

    async def counting(batch, seen):  # one call per batch: one transaction
        batches.append(len(batch))
        await original(batch, seen)

    monkeypatch.setattr(runtime.db.attempts, "write", counting)
    license_id, key = await issue_key(runtime)

    async def one(n: int) -> tuple[str, dict]:
        sent = nonce()
        presented = key if n % 2 else f"UNKNOWN{n:04d}"
        response = await client.post(
            VERIFY, data={"license_key": presented, "domain": "shop.com", "nonce": sent}
        )
        body = await response.read()
        assert response.status == 200, body
        return sent, json.loads(body)

    answers = await asyncio.gather(*(one(n) for n in range(200)))
    assert all(document["nonce"] == sent for sent, document in answers)
    statuses = [document["status"] for _, document in answers]
    assert statuses.count("active") == 100 and statuses.count("invalid") == 100

    logged = await rows(runtime.db)
    assert len(logged) == 200
    assert sum(row["license_id"] == license_id for row in logged) == 100
    assert sum(row["reason"] == "unknown_key" for row in logged) == 100
    assert sum(batches) == 200
    assert max(batches) <= batch_max_rows


# -- nothing acknowledged unless recorded ---------------------------------------------------


async def test_an_answer_is_signed_once_and_before_its_attempt_is_committed(
    client, app_runtime, monkeypatch
):
    """The pipeline signs before it waits for the commit (issue #16: the signature overlaps
    the commit, and a batch's answers go out back to back once it returns); the middleware
    does not sign that answer a second time."""
    import license_server.web.signing as signing

    _, key = await issue_key(app_runtime)
    signed: list[bytes] = []
    at_commit: list[int] = []

    def counted(keyring, body):
        signed.append(body)
        return real_header(keyring, body)

    async def write(rows, seen):
        at_commit.append(len(signed))
        await real_write(rows, seen)

    real_header, real_write = signing.signature_header, app_runtime.db.attempts.write
    monkeypatch.setattr(signing, "signature_header", counted)
    monkeypatch.setattr(app_runtime.db.attempts, "write", write)
    response = await client.post(
        VERIFY, data={"license_key": key, "domain": "shop.com", "nonce": nonce()}
    )
    body = await response.read()
    assert response.status == 200, body
    assert_signed(app_runtime, response, body)
    assert signed == [body]
    assert at_commit == [1]


async def test_every_verify_answer_carries_the_security_headers(client, app_runtime, monkeypatch):
    """ASVS 4.0.3 V14.4: the native answers are made with the headers already set
    (`SecuredResponse`), the others get them from the middleware; both must carry them all,
    and no HSTS over plain HTTP (RFC 6797 section 7.2)."""
    from license_server.web.middlewares import ANSWER_HEADERS

    _, key = await issue_key(app_runtime)
    answers = [
        await client.post(
            VERIFY, data={"license_key": key, "domain": "shop.com", "nonce": nonce()}
        ),
        await client.post(
            VERIFY, data={"license_key": "nope", "domain": "a.com", "nonce": nonce()}
        ),
        await client.post(VERIFY, data={"domain": "shop.com"}),  # 400
        await client.post(VERIFY, data=b"x", headers={"Content-Type": "text/plain"}),  # 415
        await client.post(
            "/modules/servers/licensing/verify.php", data={"licensekey": key, "domain": "a.com"}
        ),
    ]

    async def disk_full(batch, seen):
        raise DatabaseError("database or disk is full")

    monkeypatch.setattr(app_runtime.db.attempts, "write", disk_full)
    check = {"license_key": key, "domain": "shop.com", "nonce": nonce()}
    answers.append(await client.post(VERIFY, data=check))
    assert [a.status for a in answers] == [200, 200, 400, 415, 200, 503]
    for answer in answers:
        for name, value in ANSWER_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.status, name)
        assert "Strict-Transport-Security" not in answer.headers


async def test_no_decision_is_sent_unless_the_attempt_was_committed(
    client, app_runtime, monkeypatch, caplog
):
    _, key = await issue_key(app_runtime)

    async def disk_full(batch, seen):
        raise DatabaseError("database or disk is full")

    monkeypatch.setattr(app_runtime.db.attempts, "write", disk_full)
    with caplog.at_level(logging.ERROR):
        response = await client.post(
            VERIFY, data={"license_key": key, "domain": "shop.com", "nonce": nonce()}
        )
        body = await response.read()
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert_signed(app_runtime, response, body)
    problem = json.loads(body)
    assert problem["status"] == 503
    assert not {"local_key", "license", "nonce"} & problem.keys()  # no decision leaked
    assert any("could not write" in record.getMessage() for record in caplog.records)
    assert await rows(app_runtime.db) == []

    monkeypatch.undo()
    sent = nonce()
    response = await client.post(
        VERIFY, data={"license_key": key, "domain": "shop.com", "nonce": sent}
    )
    body = await response.read()
    assert response.status == 200
    document = verify_answer(
        body,
        response.headers["License-Signature"],
        public_keys(app_runtime),
        nonce=sent,
        now=time.time(),
    )
    assert document["status"] == "active"
    assert len(await rows(app_runtime.db)) == 1


# -- AttemptLog against a real database -----------------------------------------------------


@pytest.fixture
async def db(database_url):
    database = open_database(database_url)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


def attempt(at_ms: int, **changes) -> Attempt:
    fields = {
        "at_ms": at_ms,
        "endpoint": "native",
        "source_ip": "192.0.2.10",
        "reported_ip": "",
        "domain_raw": "shop.com",
        "domain": "shop.com",
        "directory": "",
        "license_id": None,
        "key_hash": None,
        "product": "",
        "result": "invalid",
        "reason": "unknown_key",
        "client_version": "",
        "user_agent": "",
        "latency_us": 5,
    }
    fields.update(changes)
    return Attempt(**fields)


async def insert(db: Database, *attempts: Attempt) -> None:
    await db.attempts.write([astuple(a) for a in attempts], [])


async def rollups(db: Database) -> dict[tuple, int]:
    return {
        (r["hour"], r["endpoint"], r["license_id"], r["result"], r["reason"]): r["attempts"]
        for r in await rows(db, "attempt_rollups")
    }


async def test_append_needs_a_running_log(db):
    log = AttemptLog(db)
    with pytest.raises(RuntimeError, match="not running"):
        await log.append(attempt(1))
    log.start()
    await log.append(attempt(2))
    await log.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await log.append(attempt(3))
    assert [row["at_ms"] for row in await rows(db)] == [2]


async def test_stop_writes_what_is_pending(db):
    log = AttemptLog(db, max_rows=500, max_delay=3600)  # the batch would wait an hour
    log.start()
    appends = [asyncio.create_task(log.append(attempt(n))) for n in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)  # let the appends queue up (no time passes)
    assert not any(task.done() for task in appends)
    assert await rows(db) == []
    await log.stop()
    await asyncio.gather(*appends)  # all acknowledged, none failed
    assert sorted(row["at_ms"] for row in await rows(db)) == [0, 1, 2]


async def test_a_full_batch_is_written_without_waiting_for_the_delay(db):
    log = AttemptLog(db, max_rows=2, max_delay=3600)
    log.start()
    try:
        await asyncio.wait_for(asyncio.gather(log.append(attempt(1)), log.append(attempt(2))), 30)
        assert len(await rows(db)) == 2
    finally:
        await log.stop()


async def test_a_failed_batch_fails_its_callers_and_the_log_keeps_running(db, monkeypatch):
    log = AttemptLog(db, max_delay=0)
    log.start()
    try:

        async def broken(batch, seen):
            raise DatabaseError("disk I/O error")

        monkeypatch.setattr(db.attempts, "write", broken)
        with pytest.raises(DatabaseError, match="disk I/O error"):
            await log.append(attempt(1))
        monkeypatch.undo()
        await log.append(attempt(2))
    finally:
        await log.stop()
    assert [row["at_ms"] for row in await rows(db)] == [2]


async def test_observers_see_committed_batches_and_a_broken_one_fails_nothing(db, monkeypatch):
    """AttemptLog.observe: the anomaly detectors' and metrics' view of the attempt stream."""
    log = AttemptLog(db, max_delay=0)
    seen: list[int] = []
    committed_when_seen: list[int] = []

    def observer(batch):
        seen.extend(a.at_ms for a in batch)

    def broken(batch):
        raise ValueError("a detector bug")

    log.observe(broken)
    log.observe(observer)
    log.start()
    try:
        await asyncio.gather(*(log.append(attempt(n)) for n in range(1, 4)))
        committed_when_seen.append(len(await rows(db)))

        async def refused(batch, seen_):
            raise DatabaseError("disk I/O error")

        monkeypatch.setattr(db.attempts, "write", refused)
        with pytest.raises(DatabaseError):
            await log.append(attempt(9))  # never committed: never observed
        monkeypatch.undo()
        await log.append(attempt(4))
    finally:
        await log.stop()
    assert sorted(seen) == [1, 2, 3, 4] and committed_when_seen == [3]


HOUR_MS = 3_600_000
DAY = 86_400
NOW = 1_749_999_600  # on the hour


async def test_prune_rolls_old_attempts_up_by_hour_and_keeps_recent_ones(db):
    log = AttemptLog(db)
    cutoff_ms = (NOW - 90 * DAY) * 1000
    h0 = (NOW - 100 * DAY) * 1000  # an old hour
    h0_hour = h0 // 1000
    ok = {"license_id": 7, "result": "active", "reason": "ok"}
    await insert(
        db,
        attempt(h0 + 10_000, **ok),
        attempt(h0 + 20 * 60_000, **ok),
        attempt(h0 + HOUR_MS - 1, **ok),
        attempt(h0 + HOUR_MS, **ok),  # the next hour
        attempt(h0 + 300_000),
        attempt(h0 + 400_000),
        attempt(h0 + 400_000, endpoint="whmcs"),
        attempt(h0 + HOUR_MS + 5, result="rate_limited", reason="per-ip"),
        attempt(cutoff_ms - 1),  # just past retention
        attempt(cutoff_ms),  # exactly at the cutoff: kept
        attempt((NOW - DAY) * 1000, **ok),
        attempt((NOW - DAY) * 1000),
    )
    deleted = await log.prune(90, rollup=True, now=NOW)
    assert deleted == 9
    kept = sorted(row["at_ms"] for row in await rows(db))
    assert kept == [cutoff_ms, (NOW - DAY) * 1000, (NOW - DAY) * 1000]
    cutoff_hour = (cutoff_ms - 1) // HOUR_MS * 3600
    assert await rollups(db) == {
        (h0_hour, "native", 7, "active", "ok"): 3,
        (h0_hour + 3600, "native", 7, "active", "ok"): 1,
        (h0_hour, "native", 0, "invalid", "unknown_key"): 2,
        (h0_hour, "whmcs", 0, "invalid", "unknown_key"): 1,
        (h0_hour + 3600, "native", 0, "rate_limited", "per-ip"): 1,
        (cutoff_hour, "native", 0, "invalid", "unknown_key"): 1,
    }

    # Later, more attempts have aged out: their counts are added to the existing hours.
    await insert(
        db,
        attempt(h0 + 30 * 60_000, **ok),
        attempt(h0 + 40 * 60_000, **ok),
        attempt(h0 + 2 * HOUR_MS, result="expired", reason="expired"),
    )
    assert await log.prune(90, rollup=True, now=NOW) == 3
    counts = await rollups(db)
    assert counts[(h0_hour, "native", 7, "active", "ok")] == 5
    assert counts[(h0_hour + 2 * 3600, "native", 0, "expired", "expired")] == 1
    assert counts[(h0_hour + 3600, "native", 7, "active", "ok")] == 1
    assert len(counts) == 7
    assert len(await rows(db)) == 3

    # Without roll-up, old attempts are only deleted.
    await insert(db, attempt(h0 + 50 * 60_000, **ok), attempt(h0 + 3 * HOUR_MS))
    assert await log.prune(90, rollup=False, now=NOW) == 2
    assert await rollups(db) == counts
    assert len(await rows(db)) == 3


async def test_prune_with_nothing_to_do(db):
    log = AttemptLog(db)
    await insert(db, attempt((NOW - DAY) * 1000))
    assert await log.prune(90, rollup=True, now=NOW) == 0
    assert await rollups(db) == {}
    assert len(await rows(db)) == 1


# -- licenses.last_access_at ----------------------------------------------------------------


async def test_a_check_updates_last_access_of_the_license(client, app_runtime):
    license_id, key = await issue_key(app_runtime)
    assert (await app_runtime.licenses.license_by_id(license_id)).last_access_at is None
    before = int(time.time())
    response = await client.post(
        VERIFY, data={"license_key": "NOPE", "domain": "shop.com", "nonce": nonce()}
    )
    assert response.status == 200
    assert (await app_runtime.licenses.license_by_id(license_id)).last_access_at is None
    response = await client.post(
        VERIFY, data={"license_key": key, "domain": "shop.com", "nonce": nonce()}
    )
    assert response.status == 200
    after = int(time.time())
    seen = (await app_runtime.licenses.license_by_id(license_id)).last_access_at
    assert seen is not None and before <= seen <= after


async def test_last_access_only_moves_forward(runtime):
    license_id, _ = await issue_key(runtime)
    log = AttemptLog(runtime.db, max_delay=0)
    log.start()
    try:
        await log.append(attempt(2_000_000_000_000, license_id=license_id, result="active"))
        await log.append(attempt(1_900_000_000_000, license_id=license_id, result="active"))
        assert (await runtime.licenses.license_by_id(license_id)).last_access_at == 2_000_000_000
        await log.append(attempt(2_000_000_360_000, license_id=license_id, result="active"))
        assert (await runtime.licenses.license_by_id(license_id)).last_access_at == 2_000_000_360
    finally:
        await log.stop()


async def test_the_newest_attempt_of_a_batch_sets_last_access(runtime):
    license_id, _ = await issue_key(runtime)
    log = AttemptLog(runtime.db, max_rows=2, max_delay=3600)  # both land in one batch
    log.start()
    try:
        await asyncio.gather(
            log.append(attempt(2_000_000_000_000, license_id=license_id, result="active")),
            log.append(attempt(1_999_999_000_000, license_id=license_id, result="active")),
        )
    finally:
        await log.stop()
    assert (await runtime.licenses.license_by_id(license_id)).last_access_at == 2_000_000_000


async def test_stop_during_a_write_finishes_that_batch(db, monkeypatch):
    entered, release = asyncio.Event(), asyncio.Event()
    real_write = db.attempts.write

    async def slow_write(batch, seen):
        entered.set()
        await release.wait()
        await real_write(batch, seen)

    monkeypatch.setattr(db.attempts, "write", slow_write)
    log = AttemptLog(db, max_delay=0)
    log.start()
    appended = asyncio.create_task(log.append(attempt(1)))
    await asyncio.wait_for(entered.wait(), 30)  # the writer is inside its batch
    stopping = asyncio.create_task(log.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not stopping.done()  # stop waits for the batch instead of cancelling it
    release.set()
    await asyncio.wait_for(asyncio.gather(appended, stopping), 30)
    assert [row["at_ms"] for row in await rows(db)] == [1]


async def test_prune_works_in_short_transactions(db, monkeypatch):
    """Old attempts go one minute per transaction, so the shared writer is never held long."""
    minute = 60_000
    base = 1_700_000_000_000 - 1_700_000_000_000 % minute
    await insert(db, *(attempt(base + n * minute + 5) for n in range(5)))
    windows = []
    real_delete = attempt_rows.delete_before

    async def counting_delete(conn, cutoff_ms):
        windows.append(cutoff_ms)
        return await real_delete(conn, cutoff_ms)

    monkeypatch.setattr(attempt_rows, "delete_before", counting_delete)
    log = AttemptLog(db)
    now = (base + 10 * minute) / 1000 + 86400  # all five are past a one-day retention
    assert await log.prune(retention_days=1, rollup=True, now=now) == 5
    assert windows == [base + (n + 1) * minute for n in range(5)]
    assert sum((await rollups(db)).values()) == 5


def test_attempt_row_is_in_the_insert_column_order():
    """Attempt.row() is written out by position for speed; this holds it to the INSERT."""
    from dataclasses import fields

    assert tuple(f.name for f in fields(Attempt)) == attempt_rows.ATTEMPT_COLUMNS
    sample = attempt(7, reported_ip="192.0.2.9", domain="shop.com", client_version="2.1")
    assert sample.row() == tuple(getattr(sample, name) for name in attempt_rows.ATTEMPT_COLUMNS)


async def test_last_access_moves_at_most_once_a_minute_per_license(runtime):
    """Issue #16: one licenses-row update per license per minute, not per second of checks."""
    license_id, _ = await issue_key(runtime)
    other, _ = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="B", email="b@example.org")
    )
    other_id = other.id
    log = AttemptLog(runtime.db, max_delay=0)
    log.start()
    writes = []
    real_write = runtime.db.attempts.write

    async def counting_write(rows, seen):
        writes.append(sorted(seen))
        await real_write(rows, seen)

    runtime.db.attempts.write = counting_write
    try:
        base = 2_000_000_000
        for seconds in (0, 1, 59, 60, 61, 130):
            await log.append(
                attempt((base + seconds) * 1000, license_id=license_id, result="active")
            )
        await log.append(attempt((base + 1) * 1000, license_id=other_id, result="active"))
    finally:
        await log.stop()
    touched = [seen for seen in writes if seen]
    assert touched == [[(license_id, base)], [(license_id, base + 60)], [(license_id, base + 130)],
                       [(other_id, base + 1)]]  # fmt: skip
    assert (await runtime.licenses.license_by_id(license_id)).last_access_at == base + 130


async def test_attempt_writers_on_one_sqlite_file_take_turns(tmp_path, monkeypatch):
    """With `workers = N` each process has an attempt writer on the one SQLite file. They
    wait for their turn in `flock` (woken the moment it is free), not in SQLite's busy
    handler, whose sleeps of 1, 2, 5 ... 25 ms let the other writer win again and again
    (issue #16: p99 60-600 ms with two workers). While another process holds the turn, a
    batch waits before its BEGIN: nothing of it is written; once the turn is free, it is."""
    fcntl = pytest.importorskip("fcntl")
    database = SqliteDatabase(tmp_path / "license_server.db")
    await database.open()
    # Another process's writer (its own open file: flock locks are per open file).
    other_process = os.open(writer_turn_path(database.path), os.O_RDWR)
    try:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        waiting = threading.Event()
        take_turn = WriterTurn.__enter__

        def enter(turn):
            waiting.set()
            take_turn(turn)

        monkeypatch.setattr(WriterTurn, "__enter__", enter)
        write = asyncio.create_task(insert(database, attempt(1)))
        assert await asyncio.to_thread(waiting.wait, 30)
        # The writer thread is in (or just before) flock, which cannot return yet.
        assert await rows(database) == [] and not write.done()
        fcntl.flock(other_process, fcntl.LOCK_UN)
        await write
        assert [row["at_ms"] for row in await rows(database)] == [1]
    finally:
        os.close(other_process)
        await database.close()

"""One bad request must never fail the others (issue #11, item 1).

A raw non-UTF-8 byte in a header, or a lone surrogate in a JSON field, used to make the attempt
log's whole batch fail to commit, and every genuine check in that batch answered 503. Now every
text is made storable when the row is built, and a batch that still fails is retried row by
row, so only a row the database truly refuses is refused.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from license_server.db import attempts as attempt_rows
from license_server.db.database import open_database
from license_server.licensing.attempt_log import AttemptLog, storable
from tests.conftest import with_sections
from tests.test_attempt_log import attempt
from tests.test_hostile_input import FORM, NATIVE, WHMCS, Server, served
from tests.verify_helpers import attempts, issue, nonce, product

GENUINE = 8
ROUNDS = 3
# Each text column's size, by name (Attempt.row keeps its own list in column order).
COLUMN_SIZES = {
    "endpoint": 16,
    "source_ip": 64,
    "reported_ip": 64,
    "domain_raw": 253,
    "domain": 253,
    "directory": 1024,
    "product": 64,
    "result": 32,
    "reason": 64,
    "client_version": 64,
    "user_agent": 256,
}

# -- storable ---------------------------------------------------------------------------------


def test_plain_ascii_is_unchanged():
    text = "WHMCS-Module/8.9 (Linux; PHP 8.2)"
    assert storable(text, 256) is text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("caf\udce9", "caf\ufffd"),  # a raw byte kept by surrogateescape
        ("\ud800shop.com", "\ufffdshop.com"),  # a lone surrogate from JSON
        ("a\x00b\x1bc\x7f", "a\ufffdb\ufffdc\ufffd"),  # NUL, ESC, DEL
        ("Bücher.example", "Bücher.example"),  # valid Unicode stays
        ("tab\tstays", "tab\tstays"),
    ],
)
def test_what_the_database_cannot_take_becomes_a_replacement_character(text, expected):
    stored = storable(text, 256)
    assert stored == expected
    stored.encode("utf-8")  # strict: would raise on a surrogate


def test_each_text_is_cut_to_its_column():
    assert storable("u" * 1000, 256) == "u" * 256
    assert storable("\udce9" * 1000, 10) == "\ufffd" * 10
    row = attempt(1, user_agent="x" * 5000, domain_raw="d" * 5000, reason="r" * 500).row()
    assert max(len(v) for v in row if isinstance(v, str)) <= 1024


@pytest.mark.parametrize(
    "hostile",
    [
        {},  # the usual row: printable ASCII within every size, kept as it is
        {"reason": "r" * 500},  # ASCII and printable, but over its column's size
        {"client_version": "8.9\x00"},  # one control character in one text
        {"domain_raw": "bücher.example"},  # valid Unicode: kept, through the slow path
        {"user_agent": "tab\tstays"},
        {"directory": "/caf\udce9" * 200},  # surrogates, and over the size
    ],
)
def test_a_row_holds_each_text_as_storable_makes_it(hostile):
    """`Attempt.row` checks the usual row as a whole; whichever way it goes, each text is what
    `storable` makes of it for its column (the sizes of db.attempts' columns)."""
    sample = attempt(1, **hostile)
    row = dict(zip(attempt_rows.ATTEMPT_COLUMNS, sample.row(), strict=True))
    for name, size in COLUMN_SIZES.items():
        assert row[name] == storable(getattr(sample, name), size), name


def test_every_text_over_its_size_is_cut_to_exactly_its_column():
    row = attempt(1, **{name: "y" * 2000 for name in COLUMN_SIZES}).row()
    stored = dict(zip(attempt_rows.ATTEMPT_COLUMNS, row, strict=True))
    assert {name: len(stored[name]) for name in COLUMN_SIZES} == COLUMN_SIZES


# -- the retry, against a real refusal by the database -----------------------------------------


@pytest.fixture
async def poisonable_db(database_url):
    database = open_database(database_url, readers=1)
    await database.open()
    async with database.write() as conn:
        # A real refusal by the database for one specific row (no mock): what a row that
        # survives sanitising but breaks a constraint would do.
        if database.backend == "sqlite":
            await conn.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON verification_attempts "
                "WHEN NEW.client_version = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
        else:
            await conn.execute(
                "ALTER TABLE verification_attempts "
                "ADD CONSTRAINT poison CHECK (client_version <> 'poison')"
            )
    try:
        yield database
    finally:
        await database.close()


async def test_a_row_the_database_refuses_costs_only_its_own_caller(poisonable_db, caplog):
    log = AttemptLog(poisonable_db, max_rows=9, max_delay=1.0)
    log.start()
    try:
        versions = [f"v{n}" for n in range(8)] + ["poison"]
        results = await asyncio.gather(
            *(log.append(attempt(1000 + n, client_version=v)) for n, v in enumerate(versions)),
            return_exceptions=True,
        )
    finally:
        await log.stop()
    assert all(r is None for r in results[:8]), results
    assert isinstance(results[8], Exception) and "poison" in str(results[8])
    async with poisonable_db.read() as conn:
        found = await conn.fetch_all(
            "SELECT client_version FROM verification_attempts ORDER BY client_version"
        )
    stored = [row["client_version"] for row in found]
    assert stored == sorted(versions[:8])
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "1 of 9" in errors[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


# -- end to end: 8 genuine checks beside one poisoned request, three rounds ------------------


@pytest.fixture
async def batching_server(settings):
    """Production runner options; the attempt log closes a batch at exactly 9 rows, so every
    round's nine requests share one batch (no timing involved)."""
    settings = with_sections(
        settings, attempt_log={"batch_max_rows": GENUINE + 1, "batch_max_delay_ms": 1000}
    )
    async with served(settings) as server:
        yield server


def raw_user_agent(server: Server, path: str, key: str) -> bytes:
    field = "license_key" if path == NATIVE else "licensekey"
    body = f"{field}={key}&domain=poison.example.com&nonce={nonce()}".encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"User-Agent: caf\xe9\r\n\r\n"  # the byte goes on the wire as it is
        + body
    )


def lone_surrogate(server: Server, path: str, key: str) -> bytes:
    # json.dumps escapes the surrogate as \ud800: valid JSON, invalid Unicode.
    body = json.dumps(
        {"license_key": key, "domain": "shop.com", "client_version": "\ud800", "nonce": nonce()}
    ).encode()
    return (
        f"POST {NATIVE} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("poison", "path"),
    [(raw_user_agent, NATIVE), (raw_user_agent, WHMCS), (lone_surrogate, NATIVE)],
)
async def test_genuine_checks_are_answered_beside_a_poisoned_request(batching_server, poison, path):
    server = batching_server
    await product(server.runtime, seats=100)
    keys = [(await issue(server.runtime))[1] for _ in range(GENUINE)]

    async def genuine(key: str, n: int) -> tuple[int, bytes]:
        fields = f"license_key={key}&domain=site{n}.example.com&nonce={nonce()}".encode()
        status, _, body = await server.post(NATIVE, fields)
        return status, body

    for _ in range(ROUNDS):
        answers = await asyncio.gather(
            *(genuine(key, n) for n, key in enumerate(keys)),
            server.send(poison(server, path, keys[0])),
        )
        for status, body in answers[:GENUINE]:
            assert status == 200 and json.loads(body)["status"] == "active", body
        poisoned_status = answers[GENUINE][0]
        assert poisoned_status < 500, answers[GENUINE]

    rows = await attempts(server.runtime)
    assert len(rows) == ROUNDS * (GENUINE + 1)
    assert sum(row["result"] == "active" for row in rows) >= ROUNDS * GENUINE
    odd = [r for r in rows if "\ufffd" in r["user_agent"] + r["client_version"]]
    assert len(odd) == ROUNDS  # the poisoned rows are stored, the bad text replaced

"""The verify hot path's shortcuts (issue #16) decide and answer exactly as the slow paths do.

Each shortcut has a slow twin that stays the reference: the hand-checked request against
`VerifyRequest.model_validate` (same model, same errors), the answer built from cached parts
against `json.dumps` of the whole document, the in-memory moving window against the rule of
`limits`' moving window. A test here fails if a shortcut starts to differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import limits
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from pydantic import ValidationError

from license_server.licensing.decision import Answer, Verdict, accepted, refused
from license_server.licensing.models import KeyKind, License, Product, Status
from license_server.licensing.verifier import Outcome
from license_server.web.rate_limit import (
    BatchedRedisMovingWindow,
    InMemoryMovingWindow,
    moving_window,
)
from license_server.web.verify import AnswerParts, _decision
from license_server.web.verify_input import CheckedRequest, VerifyRequest, checked_input
from tests.verify_helpers import issue, nonce, product, reference_client

GOOD = {"license_key": "MYMOD-ABCD-1234", "domain": "shop.example.com", "nonce": "n" * 16}
SOURCE_IP = "198.51.100.1"


def _outcome_of(fields: dict) -> tuple[str, object]:
    """("ok", the pipeline's input) or ("error", pydantic's errors), for either path."""
    try:
        model = VerifyRequest.model_validate(fields)
        return "ok", CheckedRequest(**model.model_dump()).check_input(SOURCE_IP)
    except ValidationError as exc:
        return "error", exc.errors(include_url=False, include_context=False)


def _fast(fields: dict) -> tuple[str, object]:
    try:
        return "ok", checked_input(fields, SOURCE_IP)
    except ValidationError as exc:
        return "error", exc.errors(include_url=False, include_context=False)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ip": "203.0.113.9", "directory": "/var/www/x", "product": "MyMod"},
        {"client_version": "1.2.3", "unknown": "ignored"},
        {"domain": " shop.example.com "},  # stripped by the model
        {"license_key": "\tMYMOD-ABCD-1234\n"},
        {"domain": "Shop.Example.COM."},
        {"domain": ""},
        {"domain": "not a host"},
        {"ip": "999.1.1.1"},
        {"directory": "relative/dir"},
        {"nonce": "short"},
        {"nonce": "n" * 65},
        {"nonce": "n" * 16 + "\n"},
        {"nonce": "é" * 16},
        {"license_key": ""},
        {"license_key": "K" * 256},
        {"product": "p" * 33},
        {"client_version": "v" * 65},
        {"license_key": 12345},  # JSON: a number where a string belongs
        {"domain": ["shop.example.com"]},
        {"nonce": None},
        {"ip": "\u00a0203.0.113.9"},  # Unicode white space: pydantic's own strip decides
        {"directory": "/x\x1f"},
    ],
)
def test_the_fast_path_accepts_and_refuses_as_the_model_does(changes):
    fields = {**GOOD, **changes}
    assert _fast(fields) == _outcome_of(fields)


@pytest.mark.parametrize("missing", ["license_key", "domain", "nonce"])
def test_a_missing_field_is_refused_with_the_models_error(missing):
    fields = {k: v for k, v in GOOD.items() if k != missing}
    kind, errors = _fast(fields)
    assert kind == "error" and (kind, errors) == _outcome_of(fields)


_text = (
    st.text(st.sampled_from("aZ09-_.:/ \t\u00a0\u2028\x00é*[]"), min_size=0, max_size=70)
    | st.integers()
    | st.none()
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            name: _text for name in ("license_key", "domain", "ip", "directory", "product", "nonce")
        },
    )
)
def test_any_fields_get_the_models_answer(fields):
    assert _fast(fields) == _outcome_of(fields)


@pytest.mark.parametrize(
    "changes",
    [
        {"ip": "203.0.113.9", "directory": "/srv/x", "client_version": "2", "product": "MyMod"},
        {"domain": "WWW.Shop.Example.com.", "ip": "::ffff:203.0.113.9", "directory": "/srv//x/"},
    ],
)
def test_the_fast_path_builds_the_same_input(changes):
    """Every value of the pipeline's input, raw and normalised: the fast path builds it
    directly, the model's path through CheckedRequest."""
    fields = {**GOOD, **changes}
    fast = checked_input(fields, SOURCE_IP)
    slow = CheckedRequest(**VerifyRequest.model_validate(fields).model_dump())
    assert fast == slow.check_input(SOURCE_IP)
    assert fast.raw == (fields["domain"], fields["ip"], fields["directory"])
    assert fast.facts.ip != SOURCE_IP and fast.extra == GOOD["nonce"]
    assert checked_input(GOOD, SOURCE_IP).facts.ip == SOURCE_IP  # no ip: the caller's


def _decoded_pairs(body: bytes, literal_plus=(), max_value=None):
    """The reference for `parse_urlencoded`: every name and value decoded, always."""
    from urllib.parse import unquote

    from license_server.web.request_body import Malformed

    fields: dict[str, str] = {}
    for pair in body.decode("utf-8").split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = unquote(name.replace("+", " "))
        if name in fields:
            raise Malformed(400, "", "", "duplicate_field")
        value = unquote(value) if name in literal_plus else unquote(value.replace("+", " "))
        fields[name] = value if max_value is None else value[:max_value]
    return fields


def _parsed(parse, body: bytes, **options):
    from license_server.web.request_body import Malformed

    try:
        return "ok", parse(body, **options)
    except Malformed as exc:
        return "refused", exc.reason


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["license_key", "domain", "nonce", "ip", "a+b", "a%20b", "k", ""]),
            st.text(alphabet="ab+%20&=é-_.", max_size=12),
        ),
        max_size=6,
    ),
    st.sampled_from([(), ("license_key",)]),
    st.sampled_from([None, 4]),
)
def test_an_urlencoded_body_parses_as_when_every_pair_was_decoded(pairs, literal_plus, max_value):
    """The plain-body shortcut (no `%`, no `+`: nothing to decode) gives the fields, and the
    duplicate refusals, of decoding every pair."""
    from license_server.web.request_body import parse_urlencoded

    body = "&".join(f"{name}={value}" for name, value in pairs).encode()
    options = {"literal_plus": literal_plus, "max_value": max_value}
    assert _parsed(parse_urlencoded, body, **options) == _parsed(_decoded_pairs, body, **options)


def test_the_fast_paths_limits_are_the_models_fields_in_order():
    from license_server.web.verify_input import _LIMITS

    assert (*(name for name, *_ in _LIMITS), "nonce") == CheckedRequest._fields


PRODUCT = Product(1, "mymod", "My Module", "MYMOD", 7, 14, 2, 1, ("pro", "a&b"), False)


def _license(revision: int = 1, licensee: str = "Smith & Sons <x>") -> License:
    return License(
        id=7,
        product=PRODUCT,
        key_kind=KeyKind.SIGNED,
        status=Status.ACTIVE,
        licensee_name=licensee,
        licensee_company="Ünïcode GmbH",
        licensee_email="a@example.org",
        expires_at=1_900_000_000,
        seats=2,
        reissue_count=0,
        notes="",
        revision=revision,
        created_at=1,
        updated_at=1,
    )


def _expected(outcome: Outcome, nonce_: str, server_time: int, local_key: str | None) -> str:
    body = _decision(outcome, nonce_, server_time)
    if local_key is not None:
        body["local_key"] = local_key
    return json.dumps(body, separators=(",", ":"))


@pytest.mark.parametrize(
    ("verdict", "with_license", "local_key"),
    [
        (accepted("ok"), True, "eyJ.h.s"),
        (accepted("dev_host", note="staging.shop.com is a development host"), True, "t"),
        (refused("seat_limit"), True, None),
        (Verdict(Answer.EXPIRED, "expired"), True, None),
        (refused("unknown_key"), False, None),
        (refused("bad_signature"), False, None),
    ],
)
def test_an_answer_from_cached_parts_is_byte_for_byte_json_dumps(verdict, with_license, local_key):
    outcome = Outcome(verdict, _license() if with_license else None, b"")
    parts = AnswerParts()
    for _ in range(2):  # built, then from the cache
        head, tail = parts.parts(outcome, local_key)
        sent = nonce()
        body = f'{head}"{sent}","server_time":1796280661{tail}'
        assert body == _expected(outcome, sent, 1_796_280_661, local_key)
        json.loads(body)


def test_cached_parts_follow_a_changed_license_verdict_and_local_key():
    parts = AnswerParts()
    first = _license(revision=1, licensee="Old Name")
    head, tail = parts.parts(Outcome(accepted("ok"), first, b""), "token-1")
    assert "Old Name" in tail and "token-1" in tail
    # A re-read license is a new object, even with equal fields: built again.
    renamed = _license(revision=2, licensee="New Name")
    _, tail = parts.parts(Outcome(accepted("ok"), renamed, b""), "token-1")
    assert "New Name" in tail and "Old Name" not in tail
    _, tail = parts.parts(Outcome(accepted("ok"), renamed, b""), "token-2")
    assert "token-2" in tail
    head, _ = parts.parts(Outcome(refused("seat_limit"), renamed, b""), None)
    assert head.startswith('{"status":"invalid","reason":"seat_limit"')


def test_cached_parts_are_bounded():
    parts = AnswerParts()
    parts.SIZE = 3
    for reason in ("a", "b", "c", "d", "e"):
        parts.parts(Outcome(refused(reason), None, b""), None)
    assert len(parts._by_verdict) == 3


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_in_memory_moving_window_refuses_past_the_quota_until_hits_age_out():
    clock = Clock()
    window = InMemoryMovingWindow(clock)
    item = limits.parse("3/minute")
    for _ in range(3):
        assert await window.hit(item, "per-ip", "192.0.2.1")
        clock.now += 10
    assert not await window.hit(item, "per-ip", "192.0.2.1")  # 3 within the last 60 s
    assert not await window.test(item, "per-ip", "192.0.2.1")
    assert await window.hit(item, "per-ip", "192.0.2.2")  # another identity: its own window
    stats = await window.get_window_stats(item, "per-ip", "192.0.2.1")
    assert (stats.reset_time, stats.remaining) == (1_000_000.0 + 60, 0)
    clock.now = 1_000_000.0 + 60  # the first hit is exactly 60 s old: still in the window
    assert not await window.hit(item, "per-ip", "192.0.2.1")
    clock.now += 0.001  # now it is out: one place free, and a refused hit took none
    assert await window.hit(item, "per-ip", "192.0.2.1")
    assert not await window.hit(item, "per-ip", "192.0.2.1")


async def test_in_memory_moving_window_keeps_policies_apart_and_drops_idle_keys():
    clock = Clock()
    window = InMemoryMovingWindow(clock)
    per_ip, per_key = limits.parse("1/second"), limits.parse("1/minute")
    assert await window.hit(per_ip, "per-ip", "x")
    assert await window.hit(per_key, "per-key", "x")  # same identifier, other policy
    for n in range(1000):
        assert await window.hit(per_ip, "per-ip", f"192.0.2.{n}")
    clock.now += 2  # every per-ip window is idle now; the per-key one is not
    assert await window.hit(per_ip, "per-ip", "new")
    assert len(window._windows) <= 3  # what is left: per-key "x" (still in its minute), "new"
    assert not await window.hit(per_key, "per-key", "x")


async def test_redis_hits_of_concurrent_checks_go_in_one_call_and_keep_the_rule(redis_port):
    window = moving_window(f"async+redis://127.0.0.1:{redis_port}")
    assert isinstance(window, BatchedRedisMovingWindow)
    async with closing(window):
        await _concurrent_hits(window)


async def _concurrent_hits(window) -> None:
    calls = []
    script = window._script

    async def counted(**kwargs):
        calls.append(len(kwargs["keys"]))
        return await script(**kwargs)

    window._script = counted
    item = limits.parse("5/minute")
    allowed = await asyncio.gather(*(window.hit(item, "per-ip", "192.0.2.1") for _ in range(20)))
    assert allowed == [True] * 5 + [False] * 15  # in order, as if sent one by one
    assert sum(calls) == 20 and len(calls) <= 2  # the first alone, the others together
    assert not await window.test(item, "per-ip", "192.0.2.1")
    assert await window.test(item, "per-ip", "192.0.2.2")
    assert await window.hit(item, "per-ip", "192.0.2.2")


async def test_redis_batches_share_counters_with_limits_own_moving_window(redis_port):
    uri = f"async+redis://127.0.0.1:{redis_port}"
    batched = moving_window(uri)
    plain = MovingWindowRateLimiter(storage_from_string(uri, implementation="redispy"))
    async with closing(batched), closing(plain):
        await _shared(batched, plain)


async def _shared(batched, plain) -> None:
    item = limits.parse("3/minute")
    assert await batched.hit(item, "per-key", "k")
    assert await plain.hit(item, "per-key", "k")
    stats = await plain.get_window_stats(item, "per-key", "k")
    assert stats.remaining == 1
    assert await batched.hit(item, "per-key", "k")
    assert not await plain.hit(item, "per-key", "k")
    assert not await batched.test(item, "per-key", "k")
    assert (await batched.get_window_stats(item, "per-key", "k")).remaining == 0


async def test_a_failed_redis_call_fails_every_operation_of_its_batch():
    window = moving_window("async+redis://127.0.0.1:1")  # nothing listens there
    item = limits.parse("5/minute")
    async with closing(window):
        results = await asyncio.gather(
            *(window.hit(item, "per-ip", str(n)) for n in range(5)), return_exceptions=True
        )
    assert all(isinstance(result, Exception) for result in results)
    assert not window._waiting and not window._sending


@contextlib.asynccontextmanager
async def closing(window):
    try:
        yield
    finally:
        await window.storage.bridge.storage.aclose()


@pytest.fixture
async def checker(client, app_runtime):
    await product(app_runtime, seats=2)
    return reference_client(client, app_runtime)


async def test_a_kept_verdict_ends_when_the_cached_license_expires(checker, app_runtime):
    license, key = await issue(app_runtime, expires=dt.date.today() + dt.timedelta(days=3))
    for _ in range(2):  # the second from the caches: license, verdict, answer parts
        assert (await checker.check(key, "shop.com")).reason in ("activated", "ok")
    assert (await checker.check(key, "shop.com")).reason == "ok"
    # Past the expiry, the same cached license object: no change was announced.
    app_runtime.licenses.clock = lambda: license.expires_at + 1
    checker.clock = lambda: license.expires_at + 1
    result = await checker.check(key, "shop.com")
    assert (result.status, result.reason) == ("expired", "expired")


async def test_a_kept_verdict_is_per_domain_and_per_ban(checker, app_runtime):
    _, key = await issue(app_runtime, seats=1)
    assert (await checker.check(key, "shop.com")).reason == "activated"
    assert (await checker.check(key, "shop.com")).reason == "ok"
    assert (await checker.check(key, "other.com")).reason == "seat_limit"
    await app_runtime.bans.ban("domain", "shop.com", "resold")
    result = await checker.check(key, "shop.com")
    assert (result.status, result.reason) == ("suspended", "banned")


async def test_in_memory_moving_window_reset_forgets_every_window():
    window = InMemoryMovingWindow(Clock())
    item = limits.parse("1/hour")
    assert await window.hit(item, "per-api-key", "7")
    assert not await window.hit(item, "per-api-key", "7")
    window.reset()
    assert await window.hit(item, "per-api-key", "7")


# -- a body that has arrived is taken as it is, within the same size limit (issue #16) ---------


def _arrived(body: bytes, client_max_size: int):
    from unittest import mock

    from aiohttp import streams
    from aiohttp.test_utils import make_mocked_request

    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=mock.Mock())
    payload.feed_data(body)
    payload.feed_eof()
    return make_mocked_request(
        "POST", "/api/v1/verify", payload=payload, client_max_size=client_max_size
    )


async def test_a_body_that_has_arrived_is_read_whole_once():
    from license_server.web.request_body import read_body_once

    request = _arrived(b"license_key=K&domain=a.com", 1024)
    assert await read_body_once(request, 5.0) == b"license_key=K&domain=a.com"


async def test_a_body_that_has_arrived_past_the_size_limit_is_refused_with_413():
    """ASVS 4.0.3 V13.1.3: the buffered fast path keeps `request.read()`'s limit."""
    from license_server.web.request_body import Malformed, read_body_once

    request = _arrived(b"x" * 1025, 1024)
    with pytest.raises(Malformed) as refused:
        await read_body_once(request, 5.0)
    assert refused.value.status == 413 and refused.value.reason == "http_413"
    assert await read_body_once(_arrived(b"x" * 1024, 1024), 5.0) == b"x" * 1024

"""Staff sessions: ids and their stored keys, lifetimes at their edges, CSRF, Origin check.

Every time is passed in: nothing here sleeps or reads the clock.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from license_server.staff.sessions import (
    SESSION_COOKIE,
    InvalidSessionId,
    SessionTimes,
    csrf_matches,
    expired,
    is_session_id,
    new_csrf_token,
    new_session_id,
    origin_allowed,
    session_key,
)

T = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
OURS = ["https://licenses.example.com", "https://admin.example.com:8443"]


def test_session_ids_are_256_bit_url_safe_and_distinct():
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    for session_id in ids:
        assert len(session_id) == 43 and is_session_id(session_id)
        assert set(session_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_only_the_hash_of_the_id_is_stored():
    session_id = new_session_id()
    key = session_key(session_id)
    assert key == hashlib.sha256(session_id.encode()).digest() and len(key) == 32
    assert session_id.encode() not in key
    assert session_key(session_id) == key


@pytest.mark.parametrize(
    "value",
    ["", "x", "a" * 42, "a" * 44, "a" * 42 + "=", "a" * 42 + "é", "a" * 42 + "\x00",
     "a" * 1_000_000, "../" + "a" * 40, None, b"a" * 43, 43],
)  # fmt: skip
def test_anything_else_is_not_a_session_id(value):
    assert not is_session_id(value)
    with pytest.raises(InvalidSessionId):
        session_key(value)


def test_the_cookie_name_makes_the_browser_enforce_secure_and_host_only():
    assert SESSION_COOKIE.startswith("__Host-")


@pytest.mark.parametrize(
    ("last_seen", "now", "is_expired"),
    [
        (T, T, False),
        (T, T + timedelta(minutes=29, seconds=59), False),
        (T, T + timedelta(minutes=30), True),  # idle
        (T + timedelta(hours=11, minutes=50), T + timedelta(hours=11, minutes=59), False),
        (T + timedelta(hours=11, minutes=50), T + timedelta(hours=12), True),  # absolute
        (T + timedelta(hours=11, minutes=59), T + timedelta(hours=12, seconds=1), True),
    ],
)
def test_idle_and_absolute_limits(last_seen, now, is_expired):
    assert expired(T, last_seen, now) is is_expired
    assert SessionTimes().expired(T, last_seen, now) is is_expired


def test_activity_never_extends_past_the_absolute_limit():
    times = SessionTimes()
    last_seen = T
    while last_seen < T + timedelta(hours=12):  # a request every 20 minutes for 12 hours
        now = last_seen + timedelta(minutes=20)
        if times.expired(T, last_seen, now):
            break
        last_seen = now
    assert now >= T + timedelta(hours=12)
    assert times.expires_at(T, last_seen) <= T + timedelta(hours=12)


def test_limits_can_be_set():
    short = SessionTimes(absolute=timedelta(hours=1), idle=timedelta(minutes=5))
    assert short.expired(T, T, T + timedelta(minutes=5))
    assert not short.expired(T, T + timedelta(minutes=58), T + timedelta(minutes=59))
    assert expired(T, T, T + timedelta(minutes=5), idle=timedelta(minutes=5))
    assert short.expires_at(T, T + timedelta(minutes=58)) == T + timedelta(hours=1)


def test_times_from_the_future_or_out_of_order_fail_closed():
    assert not expired(T + timedelta(seconds=20), T + timedelta(seconds=20), T)  # small skew
    assert expired(T + timedelta(minutes=5), T + timedelta(minutes=5), T)
    assert expired(T, T + timedelta(minutes=5), T)
    assert expired(T, T - timedelta(seconds=1), T)  # seen before it was created


def test_naive_times_are_a_bug_not_a_session():
    naive = datetime(2026, 12, 4, 9, 0)
    with pytest.raises(ValueError):
        expired(naive, naive, naive)
    with pytest.raises(ValueError):
        expired(T, T, naive)
    other_zone = T.astimezone(timezone(timedelta(hours=5)))
    assert not expired(T, T, other_zone)


def test_csrf_tokens_match_only_themselves():
    token = new_csrf_token()
    assert len(token) >= 43 and token != new_csrf_token()
    assert csrf_matches(token, token)
    assert csrf_matches(token, str(token))
    for given in (
        token[:-1],
        token + "a",
        token.upper(),
        "",
        None,
        b"x",
        token + "\u00e9",
        "x" * 10_000,
    ):
        assert not csrf_matches(token, given), given
    assert not csrf_matches("", "")
    assert not csrf_matches(None, None)
    assert not csrf_matches("é", "é")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_are_always_allowed(method):
    assert origin_allowed(method, "https://evil.example", "cross-site", OURS)
    assert origin_allowed(method, None, None, OURS)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "post"])
@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        ("https://licenses.example.com", None, True),
        ("https://licenses.example.com", "same-origin", True),
        ("HTTPS://Licenses.Example.com", None, True),
        ("https://admin.example.com:8443", "same-origin", True),
        ("https://admin.example.com", "same-origin", False),  # other port: another origin
        ("http://licenses.example.com", "same-origin", False),  # other scheme
        ("https://licenses.example.com.evil.example", None, False),
        ("https://evil.example", "same-origin", False),  # Origin decides when present
        ("null", "same-origin", False),  # sandboxed or opaque origin
        ("https://licenses.example.com https://evil.example", None, False),
        (None, "same-origin", True),
        ("", "same-origin", True),
        (None, "same-site", False),  # a sibling subdomain may be someone else's
        (None, "cross-site", False),
        (None, "none", False),
        (None, None, False),
        ("", "", False),
    ],
)
def test_state_changes_need_our_origin(method, origin, fetch_site, allowed):
    assert origin_allowed(method, origin, fetch_site, OURS) is allowed


def test_own_origins_are_compared_normalised():
    assert origin_allowed(
        "POST", "https://licenses.example.com", None, ["https://Licenses.example.com/"]
    )
    assert not origin_allowed("POST", "https://licenses.example.com", None, [])
    assert not origin_allowed("POST", "https://licenses.example.com", None, [""])

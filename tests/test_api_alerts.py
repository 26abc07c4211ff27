"""`/api/v1/alerts` (issue #15): list with filters and cursor pages, read one, acknowledge and
resolve with the API key as the audited actor; the Python client's methods; hostile input."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from license_server.api_client import ApiProblem, VendorApi
from license_server.appkeys import RUNTIME
from license_server.db import alerts as alert_rows
from license_server.db.audit_search import AuditFilter, audit_rows
from license_server.licensing.alerts import AlertSignal, Severity, raise_alert
from tests.api_helpers import api, make_key

JAN_10 = 1_768_003_200_000  # 2026-01-10T00:00:00Z
DAY_MS = 86_400_000


async def _raise(client, signal: AlertSignal, at_ms: int) -> int:
    async def work(conn):
        return (await raise_alert(conn, signal, at_ms)).alert_id

    return await client.app[RUNTIME].db.transaction(work)


def _signal(n: int, severity=Severity.LOW, detector="key_guessing", license_id=None):
    return AlertSignal(detector, f"ip:192.0.2.{n}", severity, f"Guessing from 192.0.2.{n}.",
                       {"unknown_keys": 40 + n, "window_seconds": 600}, license_id)  # fmt: skip


@pytest.fixture
async def alerts(client):
    ids = [await _raise(client, _signal(n), JAN_10 + n * DAY_MS) for n in range(3)]
    ids.append(await _raise(client, _signal(9, Severity.HIGH, "key_sharing", 77), JAN_10))
    return ids


async def test_list_filters_and_pages(client, alerts):
    _, headers = await make_key(client, ("alert:read",))
    response, body = await api(client, "GET", "/api/v1/alerts", headers)
    assert response.status == 200
    assert [a["id"] for a in body["items"]] == list(reversed(alerts))
    first = body["items"][-1]
    assert first["evidence"] == {"unknown_keys": 40, "window_seconds": 600}
    assert first["first_seen"] == "2026-01-10T00:00:00.000Z" and first["state"] == "open"
    for query, expected in (
        ("severity=high", [alerts[3]]),
        ("detector=key_guessing&limit=2", [alerts[2], alerts[1]]),
        ("license=77", [alerts[3]]),
        ("since=2026-01-11T00:00:00Z", [alerts[2], alerts[1]]),
        ("until=2026-01-11T00:00:00Z", [alerts[3], alerts[0]]),
        ("state=resolved", []),
    ):
        response, body = await api(client, "GET", f"/api/v1/alerts?{query}", headers)
        assert response.status == 200, query
        assert [a["id"] for a in body["items"]] == expected, query
    _, body = await api(client, "GET", "/api/v1/alerts?limit=3", headers)
    cursor = body["next_cursor"]
    _, body = await api(client, "GET", f"/api/v1/alerts?limit=3&cursor={cursor}", headers)
    assert [a["id"] for a in body["items"]] == [alerts[0]] and body["next_cursor"] is None


async def test_acknowledge_and_resolve_are_audited_with_the_key(client, alerts):
    secret, headers = await make_key(client, ("alert:read", "alert:acknowledge"))
    alert_id = alerts[0]
    response, body = await api(client, "POST", f"/api/v1/alerts/{alert_id}/acknowledge", headers)
    assert response.status == 200 and body["state"] == "acknowledged"
    assert body["state_changed_by"].startswith("api:lsk_")
    response, body = await api(client, "POST", f"/api/v1/alerts/{alert_id}/acknowledge", headers)
    assert response.status == 409 and body["status"] == 409
    response, body = await api(client, "POST", f"/api/v1/alerts/{alert_id}/resolve", headers)
    assert response.status == 200 and body["state"] == "resolved"
    response, _ = await api(client, "POST", f"/api/v1/alerts/{alert_id}/resolve", headers)
    assert response.status == 409
    async with client.app[RUNTIME].db.read() as conn:
        rows = await audit_rows(conn, AuditFilter(target=f"alert:{alert_id}"), None, 10)
    assert [(r["action"], r["actor_kind"]) for r in rows] == [
        ("alert.resolve", "api"), ("alert.acknowledge", "api"),
    ]  # fmt: skip
    assert secret.startswith(rows[0]["actor_id"] + "_")  # the key's visible prefix


async def test_scopes_are_enforced(client, alerts):
    _, reader = await make_key(client, ("alert:read",))
    _, other = await make_key(client, ("license:read",))
    response, body = await api(client, "GET", "/api/v1/alerts", other)
    assert response.status == 403
    response, _ = await api(client, "GET", f"/api/v1/alerts/{alerts[0]}", other)
    assert response.status == 403
    for action in ("acknowledge", "resolve"):
        response, body = await api(client, "POST", f"/api/v1/alerts/{alerts[0]}/{action}", reader)
        assert response.status == 403 and "alert:acknowledge" in body["detail"]
    response, _ = await api(client, "GET", "/api/v1/alerts", {})
    assert response.status == 401
    async with client.app[RUNTIME].db.read() as conn:
        assert (await alert_rows.get(conn, alerts[0]))["state"] == "open"


async def test_hostile_input_is_a_problem_and_writes_nothing(client, alerts):
    _, headers = await make_key(client)
    for query in (
        "state=closed",
        "severity=urgent",
        "detector=A%20B",
        "detector=" + "x" * 65,
        "license=0",
        "license=abc",
        "license=99999999999999999999",
        "limit=0",
        "limit=201",
        "since=yesterday",
        "since=2026-01-10",
        "since=2026-01-12T00:00:00Z&until=2026-01-11T00:00:00Z",
        "cursor=%%%",
        "cursor=bGljMTox",
        "cursor=" + "A" * 65,
        "state=open&state=all",
        "unknown=1",
    ):
        response, body = await api(client, "GET", f"/api/v1/alerts?{query}", headers)
        assert response.status == 400, query
        assert response.headers["Content-Type"].startswith("application/problem+json"), query
    for path in ("/api/v1/alerts/0", "/api/v1/alerts/999999", "/api/v1/alerts/9223372036854775808"):
        response, _ = await api(client, "GET", path, headers)
        assert response.status == 404, path
    response, _ = await api(client, "GET", "/api/v1/alerts/-1", headers)
    assert response.status == 404
    path = f"/api/v1/alerts/{alerts[0]}/resolve"
    for body, content_type in (
        (b'{"reason": "x"}', "application/json"),  # no fields are taken
        (b"[]", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"{}", "text/plain"),
        (b'{"a": 1, "a": 2}', "application/json"),
        (b"{" + b" " * 40_000 + b"}", "application/json"),
    ):
        response = await client.post(
            path, data=body, headers={**headers, "Content-Type": content_type}
        )
        assert response.status in (400, 413, 415), body[:20]
    response, _ = await api(client, "POST", "/api/v1/alerts/999999/resolve", headers)
    assert response.status == 404
    async with client.app[RUNTIME].db.read() as conn:
        assert (await alert_rows.get(conn, alerts[0]))["state"] == "open"
        assert await audit_rows(conn, AuditFilter(action="alert."), None, 10) == []


async def test_concurrent_resolves_change_it_once(client, alerts):
    _, headers = await make_key(client)
    path = f"/api/v1/alerts/{alerts[0]}/resolve"
    answers = await asyncio.gather(*(api(client, "POST", path, headers) for _ in range(4)))
    assert sorted(r.status for r, _ in answers) == [200, 409, 409, 409]


async def test_the_python_client(client, alerts):
    secret, _ = await make_key(client, ("alert:read", "alert:acknowledge"))
    async with VendorApi(str(client.make_url("")).rstrip("/"), secret) as vendor:
        page = await vendor.alert_page(severity="low", limit=2)
        assert [a.id for a in page.items] == [alerts[2], alerts[1]] and page.next_cursor
        every = [a.id async for a in vendor.alerts(page_size=2, detector="key_guessing")]
        assert every == [alerts[2], alerts[1], alerts[0]]
        since = dt.datetime(2026, 1, 11, tzinfo=dt.UTC)
        assert [a.id for a in (await vendor.alert_page(since=since)).items] == alerts[1:3][::-1]
        one = await vendor.alert(alerts[3])
        assert one.license_id == 77 and one.severity == "high"
        assert (await vendor.acknowledge_alert(alerts[3])).state == "acknowledged"
        assert (await vendor.resolve_alert(alerts[3])).state == "resolved"
        with pytest.raises(ApiProblem) as refused:
            await vendor.resolve_alert(alerts[3])
        assert refused.value.status == 409
        resolved = await vendor.alert_page(state="resolved")
        assert [a.id for a in resolved.items] == [alerts[3]]

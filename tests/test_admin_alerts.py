"""The admin's alerts pages (issue #15): list with filters and keyset pages, one alert with its
evidence, history and the Acknowledge / Resolve buttons, the dashboard's card."""

from __future__ import annotations

import asyncio
import html
import re

from license_server.appkeys import RUNTIME
from license_server.db import alerts as alert_rows
from license_server.db.audit_search import AuditFilter, audit_rows
from license_server.licensing.alerts import AlertSignal, Severity, raise_alert
from tests.test_admin import field
from tests.test_admin_licenses import issue, staff_session

DAY_MS = 86_400_000
JAN_10 = 1_768_003_200_000  # 2026-01-10T00:00:00Z


async def _raise(client, signal: AlertSignal, at_ms: int) -> int:
    async def work(conn):
        return (await raise_alert(conn, signal, at_ms)).alert_id

    return await client.app[RUNTIME].db.transaction(work)


def _sharing(license_id: int, severity=Severity.MEDIUM, **evidence) -> AlertSignal:
    return AlertSignal(
        "key_sharing", f"license:{license_id}", severity,
        f"License {license_id} was checked from 4 sites; it has 2 seats.",
        evidence or {"sites": 4, "seats": 2}, license_id,
    )  # fmt: skip


def _guessing(n: int, severity: Severity) -> AlertSignal:
    return AlertSignal("key_guessing", f"ip:192.0.2.{n}", severity, f"Guessing from 192.0.2.{n}.")


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/admin/alerts/(\d+)"', page)]


async def _audit(client, alert_id: int) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        return await audit_rows(conn, AuditFilter(target=f"alert:{alert_id}"), None, 10)


async def test_the_list_filters_and_pages(client):
    license_id, _ = await issue(client)
    shared = await _raise(client, _sharing(license_id), JAN_10)
    guessing = await _raise(
        client, AlertSignal("key_guessing", "net:203.0.113.0/24", Severity.HIGH,
                            "40 unknown keys from 203.0.113.0/24."), JAN_10 + 3 * DAY_MS,
    )  # fmt: skip
    old = await _raise(
        client, AlertSignal("key_guessing", "net:198.51.100.0/24", Severity.LOW, "Old."),
        JAN_10 - 5 * DAY_MS,
    )  # fmt: skip
    async with client.app[RUNTIME].db.write() as conn:
        await alert_rows.set_state(conn, old, state="resolved", by="staff:1", now_ms=JAN_10,
                                   only_from=("open",))  # fmt: skip
    browser = await staff_session(client, "read_only")
    response, page = await browser.get("/admin/alerts")
    assert response.status == 200
    assert _ids(page) == [guessing, shared]  # unresolved by default, newest first
    assert f'href="/admin/licenses/{license_id}"' in page  # the subject links to the license
    for query, expected in (
        ("state=resolved", [old]),
        ("state=all", [old, guessing, shared]),
        ("state=open&severity=high", [guessing]),
        ("detector=key_sharing", [shared]),
        (f"license={license_id}", [shared]),
        ("state=all&from=2026-01-12&to=2026-01-20", [guessing]),
        ("state=all&to=2026-01-06", [old]),
        ("severity=low", []),
    ):
        response, page = await browser.get(f"/admin/alerts?{query}")
        assert response.status == 200, query
        assert sorted(_ids(page)) == sorted(expected), query


async def test_keyset_pages_keep_the_filters(client):
    ids = [await _raise(client, _guessing(n, Severity.LOW), JAN_10 + n) for n in range(60)]
    browser = await staff_session(client, "read_only")
    _, page = await browser.get("/admin/alerts?severity=low")
    first = _ids(page)
    assert len(first) == 50 and first[0] == ids[-1]
    next_url = html.unescape(re.search(r'<a href="([^"]+)">Older alerts</a>', page).group(1))
    assert "severity=low" in next_url
    _, page = await browser.get(next_url)
    assert _ids(page) == list(reversed(ids[:10])) and "Older alerts" not in page


async def test_hostile_filters_are_a_400_page(client):
    browser = await staff_session(client, "admin")
    for query in (
        "state=closed",
        "state=open&state=resolved",
        "severity=urgent",
        "detector=a%20b",
        "detector=" + "x" * 300,
        "license=0",
        "license=-1",
        "license=99999999999999999999",
        "license=%EF%BC%91",
        "from=2026-02-30",
        "from=2026-01-10&to=2026-01-01",
        "before=abc",
        "before=0",
        "state=%FF",
        "detector=%00",
    ):
        response, page = await browser.get(f"/admin/alerts?{query}")
        assert response.status == 400, query
        assert "Bad filter" in page


async def test_an_alert_page_shows_the_evidence_in_words(client):
    license_id, _ = await issue(client)
    alert_id = await _raise(
        client,
        _sharing(license_id, sites=4, seats=2, window_seconds=3600, domains=["a.example",
                 "b.example"], sample_attempts=[{"id": 7, "at_ms": JAN_10 + 60_000,
                 "source_ip": "203.0.113.9", "domain": "a.example"}]),
        JAN_10,
    )  # fmt: skip
    browser = await staff_session(client, "read_only")
    response, page = await browser.get(f"/admin/alerts/{alert_id}")
    assert response.status == 200
    assert "<dt>Window</dt><dd>1 h</dd>" in page and "<dt>Sites</dt><dd>4</dd>" in page
    assert "a.example, b.example" in page
    assert f'href="/admin/licenses/{license_id}"' in page
    # The sample links to the attempt log filtered to its address and minute.
    sample = html.unescape(re.search(r'href="(/admin/attempts\?[^"]*ip=[^"]*)"', page).group(1))
    assert "ip=203.0.113.9" in sample and "from=2026-01-10T00%3A01" in sample
    response, _ = await browser.get(sample)
    assert response.status == 200  # a filter the attempt log page accepts
    assert "Acknowledge" not in page  # read_only may read, not act


async def test_acknowledge_then_resolve_with_history_and_audit(client):
    license_id, _ = await issue(client)
    alert_id = await _raise(client, _sharing(license_id), JAN_10)
    browser = await staff_session(client, "license_manager")
    _, page = await browser.get(f"/admin/alerts/{alert_id}")
    assert "Acknowledge" in page and "Resolve" in page
    csrf = field(page, "csrf")
    response, _ = await browser.post(f"/admin/alerts/{alert_id}/acknowledge", {"csrf": csrf})
    assert response.status == 303 and response.headers["Location"] == f"/admin/alerts/{alert_id}"
    _, page = await browser.get(f"/admin/alerts/{alert_id}")
    assert "acknowledged" in page and ">Acknowledge<" not in page
    response, _ = await browser.post(f"/admin/alerts/{alert_id}/resolve", {"csrf": csrf})
    assert response.status == 303
    _, page = await browser.get(f"/admin/alerts/{alert_id}")
    assert "resolve by staff:" in page and "acknowledged → resolved" in page
    assert ">Resolve<" not in page
    rows = await _audit(client, alert_id)
    assert [r["action"] for r in rows] == ["alert.resolve", "alert.acknowledge"]
    assert {r["actor_kind"] for r in rows} == {"staff"}
    # Resolved: acknowledging or resolving again is refused, nothing more is written.
    for action in ("acknowledge", "resolve"):
        response, page = await browser.post(f"/admin/alerts/{alert_id}/{action}", {"csrf": csrf})
        assert response.status == 409 and "cannot be" in page
    assert len(await _audit(client, alert_id)) == 2
    # Resolved alerts leave the default list; a new firing opens a new alert.
    _, page = await browser.get("/admin/alerts")
    assert alert_id not in _ids(page)


async def test_forged_and_bad_posts_change_nothing(client):
    license_id, _ = await issue(client)
    alert_id = await _raise(client, _sharing(license_id), JAN_10)
    browser = await staff_session(client, "admin")
    path = f"/admin/alerts/{alert_id}/resolve"
    response, _ = await browser.post(path, {"csrf": "wrong"})
    assert response.status == 403
    response, _ = await browser.post(path, {"csrf": "csrf-admin"}, origin="https://evil.example")
    assert response.status == 403
    response, _ = await browser.post(path, {"csrf": ["csrf-admin", "csrf-admin"]})
    assert response.status == 400
    response, _ = await browser.post(path, b"\xff\xfe", **{"Content-Type": "text/plain"})
    assert response.status in (400, 403)
    response, _ = await browser.post(path, {"csrf": "csrf-admin", "pad": "x" * 20_000})
    assert response.status == 413
    response, _ = await browser.post("/admin/alerts/999999/resolve", {"csrf": "csrf-admin"})
    assert response.status == 404
    response, _ = await browser.get("/admin/alerts/0")
    assert response.status == 404
    response, _ = await browser.get("/admin/alerts/99999999999999999999")
    assert response.status == 404
    async with client.app[RUNTIME].db.read() as conn:
        row = await alert_rows.get(conn, alert_id)
    assert row["state"] == "open" and await _audit(client, alert_id) == []


async def test_two_resolves_at_once_write_one_change(client):
    license_id, _ = await issue(client)
    alert_id = await _raise(client, _sharing(license_id), JAN_10)
    browser = await staff_session(client, "admin")
    path = f"/admin/alerts/{alert_id}/resolve"
    answers = await asyncio.gather(*(browser.post(path, {"csrf": "csrf-admin"}) for _ in range(4)))
    assert sorted(r.status for r, _ in answers) == [303, 409, 409, 409]
    assert len(await _audit(client, alert_id)) == 1


async def test_the_dashboard_card_counts_and_links_the_newest(client):
    ids = [await _raise(client, _guessing(n, Severity.HIGH), JAN_10 + n) for n in range(7)]
    async with client.app[RUNTIME].db.write() as conn:
        await alert_rows.set_state(conn, ids[0], state="acknowledged", by="x", now_ms=1,
                                   only_from=("open",))  # fmt: skip
    browser = await staff_session(client, "read_only")
    _, page = await browser.get("/admin")
    card = page.split('id="alerts-heading"')[1].split("</section>")[0]
    assert "<dt>open</dt><dd>6</dd>" in card and "<dt>acknowledged</dt><dd>1</dd>" in card
    assert _ids(card) == list(reversed(ids[2:]))  # the five most recently seen
    assert 'href="/admin/alerts"' in page  # the nav link and "All alerts"
    # A role without alert:read gets no card and no link.
    browser = await staff_session(client, "support")
    _, page = await browser.get("/admin")
    assert "alerts-heading" not in page and 'href="/admin/alerts"' not in page

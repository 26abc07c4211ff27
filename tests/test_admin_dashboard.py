"""The dashboard (issue #12): license counts, the hourly chart of verifications and refusals
(inline SVG with the numbers in a table), top refusal reasons, the alerts slot; and the job that
folds closed hours into attempt_hours. Attempts are inserted with known times and the service's
clock is set: nothing sleeps."""

from __future__ import annotations

import re

import pytest

from license_server.appkeys import RUNTIME
from license_server.licensing import attempt_hours
from license_server.licensing.attempt_hours import HOUR, fold_closed_hours, traffic
from license_server.licensing.attempt_log import Attempt
from license_server.staff import rbac
from tests.test_admin_licenses import staff_session

# A fixed "now": 2026-03-10 14:25:00 UTC.
NOW = 1_773_152_700
THIS_HOUR = NOW // HOUR * HOUR


def attempt(at: float, result: str = "active", reason: str = "ok") -> tuple:
    return Attempt(
        at_ms=int(at * 1000), endpoint="native", source_ip="192.0.2.1", reported_ip="",
        domain_raw="", domain="shop.example.com", directory="", license_id=None, key_hash=None,
        product="mymod", result=result, reason=reason, client_version="1.0", user_agent="",
        latency_us=100,
    ).row()  # fmt: skip


async def insert(runtime, rows: list[tuple]) -> None:
    await runtime.db.attempts.write(rows, [])


def hour_rows(page: str) -> dict[str, tuple[int, int]]:
    """The table under the chart: 'YYYY-MM-DD HH:MM' -> (verifications, refused)."""
    found = re.findall(
        r'<tr><td>([\d-]+ [\d:]+)</td><td class="num">(\d+)</td><td class="num">(\d+)</td>', page
    )
    return {when: (int(a), int(r)) for when, a, r in found}


@pytest.fixture
async def dashboard(client):
    """A read_only member of staff and the app's runtime, its clock at NOW."""
    browser = await staff_session(client, "read_only")  # the session at the real time
    runtime = client.app[RUNTIME]
    runtime.licenses.clock = lambda: NOW
    return browser, runtime


async def test_the_chart_counts_what_was_inserted(dashboard):
    browser, runtime = dashboard
    rows = [
        attempt(THIS_HOUR - 3 * HOUR + 10),  # folded hours
        attempt(THIS_HOUR - 3 * HOUR + 3599, "invalid", "unknown_key"),
        attempt(THIS_HOUR - 2 * HOUR),
        attempt(THIS_HOUR - 2 * HOUR + 5, "suspended", "banned"),
        attempt(THIS_HOUR - 2 * HOUR + 6, "suspended", "banned"),
        attempt(THIS_HOUR - HOUR + 1),  # the hour that just closed: folded below
        attempt(THIS_HOUR + 1),  # the current hour: counted from the log
        attempt(THIS_HOUR + 2, "rate_limited", "rate_limited"),
        attempt(THIS_HOUR - 8 * 24 * HOUR),  # outside the 7 days
    ]
    await insert(runtime, rows)
    folded = await fold_closed_hours(runtime.db, NOW)
    assert folded == 8 * 24  # the backfill stops at 8 days
    _, page = await browser.get("/admin")
    table = hour_rows(page)
    assert len(table) == 7 * 24
    when = lambda hour: re.sub(r":\d\d$", ":00", _utc(hour))  # noqa: E731
    assert table[when(THIS_HOUR - 3 * HOUR)] == (2, 1)
    assert table[when(THIS_HOUR - 2 * HOUR)] == (3, 2)
    assert table[when(THIS_HOUR - HOUR)] == (1, 0)
    assert table[when(THIS_HOUR)] == (2, 1)
    assert sum(a for a, _ in table.values()) == 8 and sum(r for _, r in table.values()) == 4
    svg = page.split("<svg")[1].split("</svg>")[0]
    assert 'role="img"' in page.split("<svg")[1].split(">")[0]
    assert "<title" in svg and "<desc" in svg and "8 verifications, 4 of them refused" in svg
    assert svg.count("<polyline") == 2 and "<script" not in svg
    assert "No unresolved alert" in page


async def test_folding_is_idempotent_and_the_current_hour_is_live(dashboard):
    _, runtime = dashboard
    await insert(runtime, [attempt(THIS_HOUR - HOUR + 5), attempt(THIS_HOUR + 5)])
    before = await traffic(runtime.db, NOW)  # nothing folded yet: all from the log
    assert await fold_closed_hours(runtime.db, NOW) > 0
    assert await fold_closed_hours(runtime.db, NOW) == 0  # nothing left to fold
    async with runtime.db.write() as conn:  # fold one hour again: the same counts
        from license_server.db.attempt_hours import fold_hour

        await fold_hour(conn, THIS_HOUR - HOUR)
    after = await traffic(runtime.db, NOW)
    assert before == after
    assert [h.verifications for h in after.hours[-2:]] == [1, 1]
    # An attempt arriving in the current hour shows at once, without a fold.
    await insert(runtime, [attempt(THIS_HOUR + 60, "invalid", "bad_signature")])
    latest = await traffic(runtime.db, NOW)
    assert latest.hours[-1].verifications == 2 and latest.hours[-1].refusals == 1


async def test_an_hour_is_folded_only_once_it_has_settled(dashboard):
    _, runtime = dashboard
    await insert(runtime, [attempt(THIS_HOUR - 2 * HOUR), attempt(THIS_HOUR - 1)])
    just_closed = THIS_HOUR + attempt_hours.SETTLE_SECONDS - 1
    await fold_closed_hours(runtime.db, just_closed)
    async with runtime.db.read() as conn:
        hours = await conn.fetch_all("SELECT DISTINCT hour FROM attempt_hours ORDER BY hour")
    assert [row["hour"] for row in hours] == [THIS_HOUR - 2 * HOUR]  # the last one settles
    await fold_closed_hours(runtime.db, THIS_HOUR + attempt_hours.SETTLE_SECONDS)
    async with runtime.db.read() as conn:
        hours = await conn.fetch_all("SELECT DISTINCT hour FROM attempt_hours ORDER BY hour")
    assert [row["hour"] for row in hours] == [THIS_HOUR - 2 * HOUR, THIS_HOUR - HOUR]


async def test_hours_the_pruner_may_be_deleting_are_not_folded(dashboard):
    _, runtime = dashboard
    await insert(runtime, [attempt(THIS_HOUR - 30 * HOUR)])
    await fold_closed_hours(runtime.db, NOW, retention_days=1)
    async with runtime.db.read() as conn:
        first = await conn.fetch_value("SELECT MIN(hour) FROM attempt_hours")
    assert first == THIS_HOUR - 23 * HOUR  # the first whole hour after NOW - 1 day


async def test_older_hours_come_from_the_rollups(dashboard):
    """Hours pruned before the fold existed (an upgraded server) are read from attempt_rollups."""
    _, runtime = dashboard
    old = THIS_HOUR - 5 * 24 * HOUR
    async with runtime.db.write() as conn:
        await conn.execute(
            "INSERT INTO attempt_rollups (hour, endpoint, license_id, result, reason, attempts)"
            " VALUES (?, 'native', 0, 'active', 'ok', 7), (?, 'whmcs', 3, 'invalid', 'x', 2)",
            (old, old),
        )
    await insert(runtime, [attempt(THIS_HOUR - 2 * HOUR)])
    await fold_closed_hours(runtime.db, NOW)
    result = await traffic(runtime.db, NOW)
    counts = {h.hour: (h.verifications, h.refusals) for h in result.hours if h.verifications}
    assert counts == {old: (9, 2), THIS_HOUR - 2 * HOUR: (1, 0)}


async def test_top_refusal_reasons_are_ranked_and_escaped(dashboard):
    browser, runtime = dashboard
    hostile = "<script>alert(1)</script>"
    rows = [attempt(THIS_HOUR - 2 * 24 * HOUR, "invalid", "old_reason")] * 5
    rows += [attempt(THIS_HOUR - HOUR, "invalid", hostile)] * 3
    rows += [attempt(THIS_HOUR + 1, "suspended", "banned")] * 2
    rows += [attempt(THIS_HOUR + 2)] * 9  # accepted: never a refusal reason
    await insert(runtime, rows)
    await fold_closed_hours(runtime.db, NOW)
    result = await traffic(runtime.db, NOW)
    assert result.reasons_day == [("invalid", hostile, 3), ("suspended", "banned", 2)]
    assert result.reasons_week[0] == ("invalid", "old_reason", 5)
    _, page = await browser.get("/admin")
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    reasons = page.split('id="reasons-heading"')[1].split("</section>")[0]
    assert reasons.index("old_reason") > reasons.index("Last 7 days")


async def test_an_empty_log_draws_a_flat_chart(dashboard):
    browser, _ = dashboard
    response, page = await browser.get("/admin")
    assert response.status == 200
    assert "0 verifications, 0 of them refused" in page and "No refusal." in page
    assert len(hour_rows(page)) == 7 * 24


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_every_role_sees_the_dashboard(client, role):
    browser = await staff_session(client, role)
    response, page = await browser.get("/admin")
    assert response.status == 200 and "Licenses" in page
    assert ("<svg" in page) is rbac.has_permission(role, "attempt:read")


def _utc(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))

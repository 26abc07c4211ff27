"""The admin's attempt log page (issue #12): each filter, combined filters, keyset pages, bad
filters as 400 pages, hostile logged values shown as text, the CSV export (formula-safe,
audited), and the service checking the permission again."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import attempts as attempt_rows
from license_server.db import staff as staff_rows
from license_server.licensing.attempt_log import Attempt
from license_server.staff import rbac
from license_server.staff.log_desk import AttemptFilter
from license_server.web.admin import STAFF
from license_server.web.admin.attempts import LOG_DESK
from tests.test_admin_licenses import issue, staff_session

T0 = int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)


def attempt(**values) -> Attempt:
    row = {
        "at_ms": T0, "endpoint": "native", "source_ip": "198.51.100.1", "reported_ip": "",
        "domain_raw": "shop.example.com", "domain": "shop.example.com", "directory": "",
        "license_id": None, "key_hash": None, "product": "mymod", "result": "active",
        "reason": "ok", "client_version": "1.0", "user_agent": "test", "latency_us": 100,
    }  # fmt: skip
    row.update(values)
    return Attempt(**row)


async def store(client, *attempts: Attempt) -> None:
    async with client.app[RUNTIME].db.write() as conn:
        await conn.execute_many(attempt_rows.INSERT, [a.row() for a in attempts])


def shown(page: str) -> list[str]:
    """The reasons of the rows on a page, in order (each test gives its rows unique reasons)."""
    return re.findall(r'<span class="hint wrap">([^<]*)</span>', page)


async def mixed_log(client, license_id: int) -> None:
    await store(
        client,
        attempt(reason="r1", at_ms=T0),
        attempt(reason="r2", at_ms=T0 + 60_000, result="invalid", license_id=license_id),
        attempt(
            reason="r3",
            at_ms=T0 + 120_000,
            source_ip="203.0.113.9",
            domain="pirate.net",
            domain_raw="PIRATE.net",
            result="suspended",
        ),
        attempt(reason="r4", at_ms=T0 + 3_600_000, source_ip="203.0.113.200", product="other"),
        attempt(reason="r5", at_ms=T0 + 7_200_000, source_ip="2001:db8::1", license_id=license_id),
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["r5", "r4", "r3", "r2", "r1"]),
        ("result=invalid", ["r2"]),
        ("result=suspended", ["r3"]),
        ("reason=r4", ["r4"]),
        ("product=other", ["r4"]),
        ("ip=203.0.113.9", ["r3"]),
        ("ip=203.0.113.0/24", ["r4", "r3"]),
        ("ip=203.0.0.0/16", ["r4", "r3"]),
        ("ip=203.0.112.0/23", ["r4", "r3"]),  # two octet ranges
        ("ip=203.0.114.0/23", []),
        ("ip=2001:DB8::1", ["r5"]),  # exact IPv6, normalised
        ("domain=PIRATE.net", ["r3"]),
        ("domain=https://www.pirate.net/x", ["r3"]),  # the verifier's normaliser
        ("license={license}", ["r5", "r2"]),
        ("from=2026-03-01T12:01", ["r5", "r4", "r3", "r2"]),
        ("to=2026-03-01T12:01", ["r2", "r1"]),  # the whole minute
        ("to=2026-03-01T12:01:00", ["r2", "r1"]),
        ("from=2026-03-01T12:01&to=2026-03-01T13:00", ["r4", "r3", "r2"]),
        ("result=active&ip=203.0.113.0/24&from=2026-03-01T12:30", ["r4"]),
        ("license={license}&result=invalid&to=2026-03-01T12:05", ["r2"]),
        ("domain=nowhere.example.org", []),
        ("result=&reason=&ip=", ["r5", "r4", "r3", "r2", "r1"]),  # empty fields: no filter
    ],
)
async def test_each_filter_and_combinations(client, query, expected):
    license_id, _ = await issue(client)
    await mixed_log(client, license_id)
    browser = await staff_session(client, "support")
    response, page = await browser.get("/admin/attempts?" + query.format(license=license_id))
    assert response.status == 200, page
    assert shown(page) == expected


async def test_rows_link_their_license_and_filters(client):
    license_id, _ = await issue(client)
    await mixed_log(client, license_id)
    browser = await staff_session(client, "license_manager")
    _, page = await browser.get("/admin/attempts")
    assert f'href="/admin/licenses/{license_id}"' in page
    assert 'href="/admin/attempts?domain=pirate.net"' in page
    assert 'href="/admin/bans?kind=ip&amp;value=203.0.113.9#add"' in page  # ban shortcut
    browser = await staff_session(client, "read_only")  # may not ban: no shortcut
    _, page = await browser.get("/admin/attempts")
    assert "/admin/bans?kind=" not in page


async def test_keyset_pages_with_a_filter_and_ties(client):
    # 120 refusals, three to a millisecond (ties on at_ms), between active checks.
    rows = []
    for n in range(120):
        rows.append(attempt(reason=f"x{n}", result="invalid", at_ms=T0 + n // 3))
        rows.append(attempt(reason=f"ok{n}", at_ms=T0 + n // 3))
    await store(client, *rows)
    browser = await staff_session(client, "read_only")
    seen: list[str] = []
    path = "/admin/attempts?result=invalid"
    while path:
        response, page = await browser.get(path)
        assert response.status == 200
        seen += shown(page)
        more = re.search(r'href="(/admin/attempts\?[^"]*before=\d+[^"]*)"', page)
        path = more.group(1).replace("&amp;", "&") if more else ""
        if path:
            assert "result=invalid" in path  # the filter is kept
    assert len(seen) == 120 and len(set(seen)) == 120
    assert all(reason.startswith("x") for reason in seen)
    at = [int(r[1:]) // 3 for r in seen]
    assert at == sorted(at, reverse=True)


async def test_a_cursor_whose_row_is_gone_is_an_empty_page(client):
    await store(client, attempt(reason="only"))
    browser = await staff_session(client, "read_only")
    response, page = await browser.get("/admin/attempts?before=999999")
    assert response.status == 200 and "No attempt matches." in page


@pytest.mark.parametrize(
    "query",
    [
        "ip=999.1.1.1",
        "ip=not-an-ip",
        "ip=2001:db8::/32",  # IPv6 ranges: not offered
        "ip=10.0.0.0/7",
        "ip=10.0.0.0/9",  # 128 octet ranges: too many
        "from=yesterday",
        "from=2026-02-30T10:00",
        "to=2026-03-01 10:00",
        "from=2026-03-02T00:00&to=2026-03-01T00:00",
        "from=2026-03-01T00:01&to=2026-03-01T00:00:59",
        "result=unknown",
        "result=ACTIVE",
        "reason=%3Cscript%3E",
        "product=a%20b",
        "license=abc",
        "license=0",
        "license=99999999999999999999",
        "license=%C2%B2",  # a Unicode digit
        "domain=exa%20mple.com",
        "domain=" + "a" * 254,
        "before=abc",
        "before=-1",
        "before=" + "9" * 25,
        "result=active&result=invalid",
        "before=1&before=2",
        "reason=" + "x" * 5000,
        "domain=%ff%fe",
    ],
)
async def test_bad_filters_are_a_400_page(client, query):
    browser = await staff_session(client, "support")
    response, page = await browser.get("/admin/attempts?" + query)
    assert response.status == 400, page
    assert "Bad filter" in page and "<script>" not in page
    assert "Content-Security-Policy" in response.headers


async def test_hostile_logged_values_are_escaped_and_cut(client):
    script = "<script>alert(1)</script>"
    await store(
        client,
        attempt(
            domain=f"{script}.example",
            domain_raw=script,
            user_agent=script + "A" * 300,
            directory=f"/var/{script}",
            client_version=script,
            reason=script,
            reported_ip='"><img src=x onerror=alert(1)>',
        ),
    )
    browser = await staff_session(client, "read_only")
    response, page = await browser.get("/admin/attempts")
    assert response.status == 200
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A" * 61 not in page and "…" in page  # the 300-character User-Agent is cut


async def test_the_export_is_filtered_formula_safe_streamed_and_audited(client, monkeypatch):
    from license_server.staff import log_desk

    monkeypatch.setattr(log_desk, "EXPORT_PAGE_SIZE", 7)  # several keyset pages
    rows = [attempt(reason=f"r{n}", at_ms=T0 + n, result="invalid") for n in range(20)]
    rows.append(
        attempt(
            reason='=HYPERLINK("http://evil")',
            user_agent="@SUM(1)",
            domain_raw="+cmd",
            directory="-2+3",
            result="invalid",
            at_ms=T0 + 99,
        )
    )
    rows.append(attempt(reason="not-exported", result="active"))
    await store(client, *rows)
    browser = await staff_session(client, "admin")
    response, body = await browser.get("/admin/attempts.csv?result=invalid")
    assert response.status == 200 and response.content_type == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(body)))
    assert len(table) == 21 and {r["result"] for r in table} == {"invalid"}
    hostile = table[0]
    assert hostile["reason"] == '\'=HYPERLINK("http://evil")'
    assert hostile["user_agent"] == "'@SUM(1)" and hostile["domain_raw"] == "'+cmd"
    assert hostile["directory"] == "'-2+3"
    assert [r["reason"] for r in table[1:]] == [f"r{n}" for n in reversed(range(20))]
    async with client.app[RUNTIME].db.read() as conn:
        audit = await staff_rows.audit_page(conn, None, 5)
    assert audit[0]["action"] == "attempt.export" and "invalid" in audit[0]["detail"]
    response, page = await browser.get("/admin/attempts.csv?ip=nope")
    assert response.status == 400 and "Bad filter" in page


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_the_service_checks_again_without_the_route(client, role):
    browser = await staff_session(client, role)
    staff = await client.app[STAFF].session(browser.cookie)
    desk = client.app[LOG_DESK]
    for permission, call in (
        ("attempt:read", lambda: desk.attempts(staff, AttemptFilter())),
        ("attempt:export", lambda: desk.export(staff, AttemptFilter())),
        ("ban:read", lambda: desk.bans(staff)),
        ("ban:create", lambda: desk.ban(staff, "domain", "pirate.net", "")),
        ("ban:delete", lambda: desk.lift(staff, "domain", "pirate.net")),
    ):
        if rbac.has_permission(role, permission):
            await call()
        else:
            with pytest.raises(rbac.PermissionDenied):
                await call()

"""The admin's audit log and security events pages (issue #12): filters, keyset pages, the
before/after table, hostile filters (400), the "verify the chain" button finding a row edited
behind the server's back, and the maximum password age (a settable clock, no sleeping)."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import security_events as event_rows
from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI, Actor, ActorKind
from license_server.licensing.lifecycle import Action
from license_server.settings import Settings
from license_server.staff import passwords, sessions
from license_server.web.admin import STAFF
from tests.conftest import with_sections
from tests.store_helpers import execute, rows
from tests.test_admin import PASSWORD, Browser, field
from tests.test_admin_licenses import issue, staff_session


async def audit_rows(client) -> list[dict]:
    return await rows(client.app[RUNTIME].db, "audit_log", "id")


def row_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", page)]


async def test_the_audit_log_newest_first_with_filters(client):
    license_id, _ = await issue(client)
    runtime = client.app[RUNTIME]
    await runtime.licenses.apply(license_id, Action.SUSPEND, actor=CLI)
    browser = await staff_session(client, "license_manager")
    _, page = await browser.get("/admin/licenses")
    await browser.post(f"/admin/licenses/{license_id}/unsuspend", {"csrf": "csrf-license_manager"})
    every = await audit_rows(client)
    response, page = await browser.get("/admin/audit")
    assert response.status == 200 and "Verify the chain" in page
    assert row_ids(page) == [row["id"] for row in reversed(every)]
    assert "license_manager &lt;license_manager@example.org&gt;" in page  # the actor, named

    _, page = await browser.get("/admin/audit?actor=license_manager@example.org")
    assert [every[i - 1]["action"] for i in row_ids(page)] == ["license.unsuspend"]
    _, page = await browser.get("/admin/audit?actor=cli")
    assert {every[i - 1]["actor_kind"] for i in row_ids(page)} == {"cli"}
    _, page = await browser.get("/admin/audit?action=license.suspend")
    assert [every[i - 1]["action"] for i in row_ids(page)] == ["license.suspend"]
    _, page = await browser.get("/admin/audit?action=license.")
    actions = {every[i - 1]["action"] for i in row_ids(page)}
    assert actions == {"license.issue", "license.suspend", "license.unsuspend"} or all(
        a.startswith("license.") for a in actions
    )
    assert "product.create" not in actions
    _, page = await browser.get(f"/admin/audit?target=license:{license_id}")
    assert {every[i - 1]["target"] for i in row_ids(page)} == {f"license:{license_id}"}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    _, page = await browser.get(f"/admin/audit?from={today}&to={today}")
    assert len(row_ids(page)) == len(every)
    _, page = await browser.get("/admin/audit?to=2001-01-01")
    assert row_ids(page) == [] and "No row matches." in page


async def test_before_and_after_values_are_a_small_table(client):
    db = client.app[RUNTIME].db
    async with db.write() as conn:
        await client.app[RUNTIME].licenses.audit.append(
            conn, at=int(time.time()), actor=Actor(ActorKind.STAFF, "9"), action="product.update",
            target="product:1",
            detail={"before": {"seats": 2, "name": "Old <b>"}, "after": {"seats": 5,
                    "name": "Old <b>"}, "why": "upgrade"},
        )  # fmt: skip
    browser = await staff_session(client, "read_only")
    _, page = await browser.get("/admin/audit")
    table = page.split('<table class="changes">')[1].split("</table>")[0]
    assert re.search(
        r"<th scope=\"row\">seats</th><td><del>2</del></td><td><ins>5</ins></td>", table
    )
    assert "name" not in table  # unchanged fields are left out
    assert "why" in table and "upgrade" in table
    assert "staff:9" in page  # an actor id no account has any more


async def test_the_audit_log_pages_by_keyset_keeping_the_filters(client):
    db = client.app[RUNTIME].db
    audit = client.app[RUNTIME].licenses.audit
    async with db.write() as conn:
        await audit.append_all(
            conn, at=int(time.time()), actor=CLI,
            entries=[("license.note", f"license:{n % 2}", {"n": n}) for n in range(120)],
        )  # fmt: skip
    browser = await staff_session(client, "read_only")
    _, first = await browser.get("/admin/audit?target=license:1")
    link = re.search(r'href="(/admin/audit\?[^"]+)">Older rows', first).group(1)
    assert "target=license%3A1" in link
    _, second = await browser.get(link.replace("&amp;", "&"))
    one, two = row_ids(first), row_ids(second)
    assert (len(one), len(two)) == (50, 10) and "Older rows" not in second
    assert one + two == sorted(one + two, reverse=True)
    targets = {row["id"]: row["target"] for row in await audit_rows(client)}
    assert {targets[i] for i in one + two} == {"license:1"}


COMMON_HOSTILE = [
    "before=abc",
    "before=-1",
    "before=99999999999999999999999",
    "before=%D9%A3",  # an Arabic-Indic digit: isdigit() says yes, int() would take it
    "from=31/12/2026",
    "from=2026-02-30",
    "to=" + "9" * 50,
    "from=2026-02-02&to=2026-02-01",
    "from=2026-01-01&from=2026-01-02",
    "before=1&before=2",
]


@pytest.mark.parametrize(
    ("path", "query"),
    [("/admin/audit", q) for q in COMMON_HOSTILE]
    + [("/admin/security", q) for q in COMMON_HOSTILE]
    + [
        ("/admin/audit", "action=a&action=b"),
        ("/admin/audit", "target=" + "x" * 500),
        ("/admin/audit", "target=a%00b"),
        ("/admin/audit", "target=%ff%fe"),
        ("/admin/audit", "actor=%0d%0astaff"),
        ("/admin/security", "kind=a&kind=b"),
        ("/admin/security", "account=" + "x" * 500),
        ("/admin/security", "account=a%00b"),
        ("/admin/security", "account=%ff%fe"),
        ("/admin/security", "account=%0d%0aSet-Cookie:x"),
        ("/admin/security", "ip=1.2.3.4&ip=5.6.7.8"),
    ],
)
async def test_hostile_filters_are_a_400_page(client, path, query):
    browser = await staff_session(client, "admin")
    before = len(await audit_rows(client))
    response, page = await browser.get(f"{path}?{query}")
    assert response.status == 400, page
    assert "Bad filter" in page and "<script" not in page
    assert len(await audit_rows(client)) == before  # nothing written


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin/audit", "actor=nobody@example.org"),
        ("/admin/audit", "actor=robot:1"),
        ("/admin/audit", "action=License.Suspend;drop"),
        ("/admin/security", "kind=nonsense"),
        ("/admin/security", "ip=300.1.1.1"),
        ("/admin/security", "ip=<script>"),
        ("/admin/security", "account=0"),
    ],
)
async def test_filter_values_of_the_wrong_kind_are_a_400_page(client, path, query):
    browser = await staff_session(client, "admin")
    response, page = await browser.get(f"{path}?{query}")
    assert response.status == 400 and "Bad filter" in page and "<script>" not in page


async def _event(db, *, at, kind, account_id=None, email="", email_hash=None, ip="192.0.2.1"):
    async with db.write() as conn:
        await event_rows.insert_event(
            conn, at=at, kind=kind, account_id=account_id, email=email, email_hash=email_hash,
            source_ip=ip, user_agent="UA/1", detail='{"reason": "wrong_password"}',
        )  # fmt: skip


async def test_the_security_page_filters_by_kind_account_address_and_time(client):
    db = client.app[RUNTIME].db
    browser = await staff_session(client, "read_only")  # every :read, so this page too
    events = client.app[STAFF].events
    now = int(time.time())
    await _event(db, at=now - 3 * 86400, kind="sign_in_failed", ip="198.51.100.7",
                 email_hash=events.email_hash("Typo@Example.org"))  # fmt: skip
    await _event(db, at=now, kind="rate_limited", ip="2001:db8::1")
    await _event(db, at=now, kind="sign_in_ok", account_id=1, email="read_only@example.org")
    _, page = await browser.get("/admin/security")
    assert page.count('<tr><td class="nowrap">') == 3
    assert "unknown address #" in page and "Typo@Example.org" not in page

    def count(p):
        return p.count('<tr><td class="nowrap">')

    _, page = await browser.get("/admin/security?kind=rate_limited")
    assert count(page) == 1 and "2001:db8::1" in page
    _, page = await browser.get("/admin/security?ip=2001:DB8:0::1")  # normalised
    assert count(page) == 1
    _, page = await browser.get("/admin/security?account=typo@example.org")  # as typed
    assert count(page) == 1 and "198.51.100.7" in page
    _, page = await browser.get("/admin/security?account=1")
    assert count(page) == 1 and "read_only &lt;read_only@example.org&gt;" in page
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 3 * 86400))
    _, page = await browser.get(f"/admin/security?to={day}")
    assert count(page) == 1 and "198.51.100.7" in page
    _, page = await browser.get(f"/admin/security?from={time.strftime('%Y-%m-%d')}")
    assert count(page) == 2


async def test_the_security_page_pages_by_keyset(client):
    db = client.app[RUNTIME].db
    for n in range(55):
        await _event(db, at=1_800_000_000 + n, kind="mfa_failed")
    browser = await staff_session(client, "admin")
    _, first = await browser.get("/admin/security?kind=mfa_failed")
    link = re.search(r'href="(/admin/security\?[^"]+)">Older events', first).group(1)
    _, second = await browser.get(link.replace("&amp;", "&"))
    assert first.count("mfa failed</td>") == 50 and second.count("mfa failed</td>") == 5
    assert "Older events" not in second


async def _edit_behind_the_back(client, store, row_id: int) -> None:
    if store == "sqlite":  # with sqlite3 itself, as someone at the server's shell would
        location = client.app[RUNTIME].settings.database_location()
        with sqlite3.connect(location) as conn:
            conn.execute("UPDATE audit_log SET actor_id = 'someone' WHERE id = ?", (row_id,))
    else:
        await execute(
            client.app[RUNTIME].db, "UPDATE audit_log SET actor_id = 'someone' WHERE id = ?",
            (row_id,),
        )  # fmt: skip


async def test_the_verify_button_finds_an_edited_row(client, store):
    license_id, _ = await issue(client)
    for action in (Action.SUSPEND, Action.UNSUSPEND):
        await client.app[RUNTIME].licenses.apply(license_id, action, actor=CLI)
    browser = await staff_session(client, "read_only")  # audit:read is enough
    _, page = await browser.get("/admin/audit")
    response, page = await browser.post("/admin/audit/verify", {"csrf": field(page, "csrf")})
    count = len(await audit_rows(client))
    assert response.status == 200 and "The chain is intact" in page and f"{count} rows" in page
    await _edit_behind_the_back(client, store, 3)
    response, page = await browser.post("/admin/audit/verify", {"csrf": "csrf-read_only"})
    assert response.status == 200 and "The chain is broken at row 3" in page
    assert "its content was changed" in page and "The 2 rows before it are intact" in page
    # No token, or another site: refused before any work.
    response, _ = await browser.post("/admin/audit/verify", {})
    assert response.status == 403
    response, _ = await browser.post(
        "/admin/audit/verify", {"csrf": "csrf-read_only"}, origin="https://evil.example"
    )
    assert response.status == 403
    response, _ = await browser.get("/admin/audit/verify")
    assert response.status == 405


async def test_two_checks_at_once_share_one_walk(client, monkeypatch):
    import asyncio

    from license_server.web.admin.base import OVERSIGHT

    audit = client.app[RUNTIME].licenses.audit
    walks, started, release = [], asyncio.Event(), asyncio.Event()
    real = audit.verify

    async def held(db):
        walks.append(1)
        started.set()
        await release.wait()  # still running when the other clicks arrive
        return await real(db)

    monkeypatch.setattr(audit, "verify", held)
    browser = await staff_session(client, "admin")
    staff = await client.app[STAFF].session(browser.cookie)
    oversight = client.app[OVERSIGHT]
    clicks = [asyncio.create_task(oversight.check_chain(staff)) for _ in range(3)]
    await started.wait()  # the three clicks ran before the walk's first step: all joined
    release.set()
    results = await asyncio.gather(*clicks)
    assert len(walks) == 1 and len({id(r) for r in results}) == 1
    assert results[0].broken is None


# -- the maximum password age --------------------------------------------------------------

DAY = 86400


async def expiring_session(client, changed_at: int) -> Browser:
    """An administrator whose password (PASSWORD) was last changed at `changed_at`, signed
    in with both factors now (by the staff service's clock)."""
    accounts = client.app[STAFF]
    password_hash = await passwords.hash_password_async(PASSWORD)
    session_id = sessions.new_session_id()
    async with client.app[RUNTIME].db.write() as conn:
        account_id = await staff_rows.insert_account(
            conn, email="ann@example.org", name="Ann", role="admin",
            password_hash=password_hash, now=changed_at,
        )  # fmt: skip
        await staff_rows.set_totp(conn, account_id, b"enrolled", changed_at)
        await staff_rows.insert_session(
            conn, session_key=sessions.session_key(session_id), account_id=account_id,
            csrf_token="csrf-ann", mfa_passed=True, now=accounts.now(),
        )  # fmt: skip
    browser = Browser(client)
    browser.cookie = session_id
    return browser


@pytest.fixture
async def aged_client(aiohttp_client, settings):
    return await aiohttp_client(
        create_app(with_sections(settings, staff={"password_max_age_days": 90}))
    )


async def test_an_expired_password_leads_every_page_to_the_password_page(aged_client):
    client = aged_client
    accounts = client.app[STAFF]
    start = time.time()
    accounts.clock = lambda: start
    # Changed 90 days ago less ten minutes: not expired yet.
    browser = await expiring_session(client, int(start) - 90 * DAY + 600)
    response, _ = await browser.get("/admin/licenses")
    assert response.status == 200
    accounts.clock = lambda: start + 1200  # twenty minutes on: 90 days and ten minutes
    for path in ("/admin", "/admin/licenses", "/admin/audit", "/admin/staff"):
        response, _ = await browser.get(path)
        assert response.status == 303 and response.headers["Location"] == "/admin/password"
    response, _ = await browser.post("/admin/products", {"csrf": "csrf-ann", "code": "x"})
    assert response.status == 303 and response.headers["Location"] == "/admin/password"
    assert await client.app[RUNTIME].licenses.products() == []  # nothing written
    response, page = await browser.get("/admin/password")
    assert response.status == 200 and "older than the maximum age" in page
    new = "Another-Good-Passphrase-9"
    response, page = await browser.post(
        "/admin/password", {"csrf": "csrf-ann", "current": PASSWORD, "new": new, "confirm": new}
    )
    assert response.status == 200 and "Your password is changed" in page
    assert "older than the maximum age" not in page
    response, page = await browser.get("/admin/licenses")
    assert response.status == 200 and "older than the maximum age" not in page


async def test_no_maximum_age_by_default(client):
    browser = await expiring_session(client, 1)  # changed in 1970
    response, _ = await browser.get("/admin/licenses")
    assert response.status == 200


@pytest.mark.parametrize(("days", "ok"), [(0, True), (90, True), (180, True), (30, False),
                                          (181, False), (-1, False)])  # fmt: skip
def test_the_maximum_age_is_off_or_90_to_180_days(days, ok):
    from pydantic import ValidationError

    if ok:
        assert Settings(staff={"password_max_age_days": days}).staff.password_max_age_days == days
    else:
        with pytest.raises(ValidationError, match="90 to 180"):
            Settings(staff={"password_max_age_days": days})

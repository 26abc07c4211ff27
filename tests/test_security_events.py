"""Security events (issue #12, ASVS 4.0.3 V7.1.3, V7.2.1, V7.2.2): each kind recorded by the
real flow through the pages, never a typed unknown address in clear, the same answer whether
the account exists, one row for a storm of 429s, a failed recording never fails the request,
the structured log line, pruning after the retention."""

from __future__ import annotations

import json
import logging
import re
import time

from license_server.appkeys import RUNTIME
from license_server.db import security_events as event_rows
from license_server.licensing.actors import CLI
from license_server.staff import security_events
from license_server.web.admin import STAFF
from license_server.web.admin.base import SIGN_IN_LIMITER
from tests.store_helpers import rows
from tests.test_admin import PASSWORD, Browser, field, now_code, setup_admin, signed_in
from tests.test_admin_licenses import staff_session

# What someone typed into the e-mail box: their password.
TYPED_SECRET = "Hunter2-My-Real-Passphrase"


async def events(client) -> list[dict]:
    return await rows(client.app[RUNTIME].db, "security_events", "id")


def kinds(found: list[dict]) -> list[str]:
    return [row["kind"] for row in found]


def no_trace_of(text: str, found: list[dict]) -> bool:
    for row in found:
        for value in row.values():
            if isinstance(value, bytes | memoryview):
                value = bytes(value).decode("latin-1")
            shown = str(value)
            if text.lower() in shown.lower():
                return False
    return True


async def test_sign_in_failures_are_recorded_alike_and_answered_alike(client, caplog):
    caplog.set_level(logging.INFO, logger="license_server.security")
    visitor = Browser(client)
    await setup_admin(visitor)
    wrong, wrong_page = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": "Wrong-Horse-7-Battery"}
    )
    unknown, unknown_page = await visitor.post(
        "/admin/login", {"email": TYPED_SECRET, "password": "Wrong-Horse-7-Battery"}
    )
    # The visitor cannot tell the two apart (V2.2, no user enumeration).
    assert wrong.status == unknown.status == 400
    assert re.search(r'role="alert">.*?</div>', wrong_page, re.S).group(0) == re.search(
        r'role="alert">.*?</div>', unknown_page, re.S
    ).group(0)
    found = await events(client)
    assert kinds(found) == ["setup_link_used", "sign_in_failed", "sign_in_failed"]
    known, stranger = found[1], found[2]
    assert known["account_id"] is not None and known["email"] == "ann@example.org"
    assert json.loads(known["detail"]) == {"reason": "wrong_password"}
    assert stranger["account_id"] is None and stranger["email"] == ""
    assert json.loads(stranger["detail"]) == {"reason": "unknown_account"}
    assert bytes(stranger["email_hash"]) == client.app[STAFF].events.email_hash(TYPED_SECRET)
    assert stranger["source_ip"] == "127.0.0.1" and "Python" in stranger["user_agent"]
    # What was typed is nowhere: not in the rows, not in the log.
    assert no_trace_of(TYPED_SECRET, found)
    assert TYPED_SECRET.lower() not in caplog.text.lower()
    lines = [r for r in caplog.records if r.name == "license_server.security"]
    logged = [r.security_event for r in lines]
    assert [e["kind"] for e in logged] == kinds(found)
    assert logged[1]["email"] == "a***@example.org" and logged[1]["ip"] == "127.0.0.0/24"
    assert logged[2]["email"].startswith("unknown#")
    assert "ann@example.org" not in caplog.text


async def test_a_disabled_account_is_a_failure_with_its_reason(client):
    visitor = Browser(client)
    await setup_admin(visitor)
    staff = client.app[STAFF]
    account = (await staff.all_accounts())[0]
    await staff.set_disabled(account.id, True, actor=CLI)
    response, _ = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": PASSWORD}
    )
    assert response.status == 400
    assert json.loads((await events(client))[-1]["detail"]) == {"reason": "disabled"}


async def test_a_wrong_code_at_enrolment_is_an_mfa_failure(client):
    visitor = Browser(client)
    await setup_admin(visitor)
    await visitor.post("/admin/login", {"email": "ann@example.org", "password": PASSWORD})
    _, page = await visitor.get("/admin/enrol")
    form = {"csrf": field(page, "csrf"), "enrolment": field(page, "enrolment")}
    response, _ = await visitor.post("/admin/enrol", {**form, "code": "000000"})
    assert response.status == 400
    found = await events(client)
    assert kinds(found) == ["setup_link_used", "mfa_failed"]
    assert json.loads(found[1]["detail"]) == {"step": "enrolment"}


async def recovery_codes(visitor: Browser) -> list[str]:
    await setup_admin(visitor)
    await visitor.post("/admin/login", {"email": "ann@example.org", "password": PASSWORD})
    _, page = await visitor.get("/admin/enrol")
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page).group(1)
    form = {"csrf": field(page, "csrf"), "enrolment": field(page, "enrolment")}
    _, page = await visitor.post("/admin/enrol", {**form, "code": now_code(secret)})
    codes = re.findall(r"<li>([0-9a-z]{4}-[0-9a-z-]+)</li>", page)
    assert len(codes) == 10
    return codes


async def test_mfa_failure_then_a_recovery_code(client):
    codes = await recovery_codes(Browser(client))
    other = Browser(client)
    await other.post("/admin/login", {"email": "ann@example.org", "password": PASSWORD})
    _, page = await other.get("/admin/mfa")
    response, _ = await other.post("/admin/mfa", {"csrf": field(page, "csrf"), "code": "123456"})
    assert response.status == 400
    response, _ = await other.post("/admin/mfa", {"csrf": field(page, "csrf"), "code": codes[0]})
    assert response.status == 303
    found = await events(client)
    assert kinds(found) == [
        "setup_link_used", "sign_in_ok", "mfa_failed", "recovery_code_used", "sign_in_ok"
    ]  # fmt: skip
    assert json.loads(found[1]["detail"]) == {"second_factor": "totp"}
    assert json.loads(found[2]["detail"]) == {"step": "sign_in"}
    assert json.loads(found[4]["detail"]) == {"second_factor": "recovery_code"}
    assert {row["account_id"] for row in found} == {found[0]["account_id"]}
    assert no_trace_of(codes[0], found)


async def test_password_change_failed_changed_and_every_session_ended(client):
    visitor = Browser(client)
    await signed_in(visitor)
    _, page = await visitor.get("/admin/password")
    new = "Another-Good-Passphrase-9"
    form = {"csrf": field(page, "csrf"), "current": "Wrong-Horse-7-Battery", "new": new,
            "confirm": new}  # fmt: skip
    response, _ = await visitor.post("/admin/password", form)
    assert response.status == 400
    response, page = await visitor.post("/admin/password", {**form, "current": PASSWORD})
    assert response.status == 200
    response, _ = await visitor.post("/admin/sessions/end-all", {"csrf": field(page, "csrf")})
    assert response.status == 303
    found = await events(client)
    assert kinds(found)[-3:] == ["password_change_failed", "password_changed", "sessions_ended"]
    assert json.loads(found[-2]["detail"]) == {"sessions_ended": 1}
    assert json.loads(found[-1]["detail"])["how"] == "everywhere"
    assert no_trace_of(new, found) and no_trace_of(PASSWORD, found)


async def test_sign_out_is_recorded(client):
    visitor = Browser(client)
    await signed_in(visitor)
    _, page = await visitor.get("/admin")
    await visitor.post("/admin/logout", {"csrf": field(page, "csrf")})
    last = (await events(client))[-1]
    assert last["kind"] == "sessions_ended" and json.loads(last["detail"]) == {"how": "sign_out"}


async def test_a_spent_set_up_link_is_refused_and_recorded(client):
    visitor = Browser(client)
    token = await client.app[STAFF].first_admin_link(CLI)
    form = {"email": "ann@example.org", "name": "Ann", "password": PASSWORD, "confirm": PASSWORD}
    response, _ = await visitor.post(f"/admin/setup/{token}", form)
    assert response.status == 200
    response, _ = await visitor.post(f"/admin/setup/{token}", {**form, "email": "eve@example.org"})
    assert response.status == 410
    found = await events(client)
    assert kinds(found) == ["setup_link_used", "setup_link_refused"]
    assert found[0]["email"] == "ann@example.org" and found[1]["email"] == ""
    assert found[1]["source_ip"] == "127.0.0.1"  # from the request, not passed by the page


async def test_permission_denied_is_recorded_with_what_was_asked(client):
    browser = await staff_session(client, "support")
    response, page = await browser.get("/admin/staff")
    assert response.status == 403 and "Your role does not allow this." in page
    response, _ = await browser.post("/admin/audit/verify", {"csrf": "csrf-support"})
    assert response.status == 403
    found = await events(client)
    assert kinds(found) == ["permission_denied", "permission_denied"]
    assert json.loads(found[0]["detail"]) == {
        "method": "GET", "path": "/admin/staff", "permission": "staff:read"
    }  # fmt: skip
    assert json.loads(found[1]["detail"])["permission"] == "audit:read"
    assert found[0]["email"] == "support@example.org" and found[0]["account_id"] is not None


async def test_a_forged_post_against_a_session_is_recorded(client):
    browser = await staff_session(client, "admin")
    form = {"csrf": "csrf-admin", "role": "support"}
    response, _ = await browser.post("/admin/staff/invite", form, origin="https://evil.example")
    assert response.status == 403
    response, _ = await browser.post("/admin/staff/invite", {"csrf": "wrong", "role": "support"})
    assert response.status == 403
    # Without a session nobody is targeted: nothing is written (anyone could fill the table).
    response, _ = await Browser(client).post("/admin/login", {"email": "a@b.org"},
                                             origin="https://evil.example")  # fmt: skip
    assert response.status == 403
    found = await events(client)
    assert kinds(found) == ["forged_request", "forged_request"]
    details = [json.loads(row["detail"]) for row in found]
    assert details[0]["check"] == "origin" and details[0]["origin"] == "https://evil.example"
    assert details[1]["check"] == "csrf_token" and details[1]["path"] == "/admin/staff/invite"
    assert found[0]["email"] == "admin@example.org"


async def test_a_storm_of_429s_is_one_event_per_identity(client):
    visitor = Browser(client)
    await setup_admin(visitor)
    statuses = []
    for _ in range(9):
        response, _ = await visitor.post(
            "/admin/login", {"email": TYPED_SECRET, "password": "Wrong-Horse-7-Battery"}
        )
        statuses.append(response.status)
    assert statuses == [400] * 5 + [429] * 4
    found = [row for row in await events(client) if row["kind"] == "rate_limited"]
    # The address ran out first (it is checked before the body is read): one row for it.
    assert len(found) == 1
    detail = json.loads(found[0]["detail"])
    assert detail["limit"] == "ip" and detail["path"] == "/admin/login"
    assert 1 <= detail["retry_after"] <= 60
    assert no_trace_of(TYPED_SECRET, await events(client))


async def test_an_account_throttled_is_recorded_by_its_hash(client):
    visitor = Browser(client)
    await setup_admin(visitor)
    limiter = client.app[SIGN_IN_LIMITER]
    for _ in range(5):  # spend the account's budget without spending this address's
        await limiter.refusals(f"account:{TYPED_SECRET.lower()}")
    response, _ = await visitor.post(
        "/admin/login", {"email": TYPED_SECRET, "password": "Wrong-Horse-7-Battery"}
    )
    assert response.status == 429
    last = (await events(client))[-1]
    assert last["kind"] == "rate_limited" and json.loads(last["detail"])["limit"] == "account"
    assert bytes(last["email_hash"]) == client.app[STAFF].events.email_hash(TYPED_SECRET)
    assert no_trace_of(TYPED_SECRET, [last])


async def test_a_failed_recording_never_fails_the_request(client, monkeypatch, caplog):
    visitor = Browser(client)
    await setup_admin(visitor)

    async def broken(conn, **row):
        raise RuntimeError("disk full")

    monkeypatch.setattr(event_rows, "insert_event", broken)
    response, page = await visitor.post(
        "/admin/login", {"email": "ann@example.org", "password": "Wrong-Horse-7-Battery"}
    )
    assert response.status == 400 and "not right" in page
    assert "could not be recorded" in caplog.text


async def test_events_past_the_retention_are_pruned(client):
    """Pruned as of a clock a year ahead. The events are of today, not of 1970: the app's own
    pruner runs at start-up on the real clock and would otherwise delete them first, whenever
    it happens to run after the inserts (CI saw it: 0 pruned here instead of 2)."""
    db = client.app[RUNTIME].db
    today = int(time.time())
    async with db.write() as conn:
        for at in (today - 2_000, today - 1_000, today + 90_000):
            await event_rows.insert_event(
                conn, at=at, kind="sign_in_failed", account_id=None, email="",
                email_hash=None, source_ip="192.0.2.1", user_agent="", detail="{}",
            )  # fmt: skip
    now = today + 90_000 + 365 * 86400 - 1
    assert await security_events.prune(db, 365, now=now) == 2
    assert [row["at"] for row in await events(client)] == [today + 90_000]


def test_masks_for_the_log():
    assert security_events.mask_email("ann@example.org") == "a***@example.org"
    assert security_events.mask_email("no-at-sign") == "***"

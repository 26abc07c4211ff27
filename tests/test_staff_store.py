"""Staff storage (issue #12's tables) on the store under test: accounts, sessions, recovery
codes, set-up links and the audit log; single use decided by the database under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from license_server.db import staff as staff_rows
from license_server.db.errors import DatabaseError, UniqueViolation
from license_server.licensing.actors import Actor, ActorKind

NOW = 1_800_000_000


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def new_account(db, email="Ann@Example.org", role="admin") -> int:
    async with db.write() as conn:
        return await staff_rows.insert_account(
            conn, email=email, name="Ann", role=role, password_hash="$argon2id$x", now=NOW
        )


async def test_an_account_round_trips_and_emails_are_one_per_address(runtime):
    db = runtime.db
    account_id = await new_account(db)
    async with db.read() as conn:
        account = await staff_rows.account_by_email(conn, "ann@EXAMPLE.org")
        assert await staff_rows.count_accounts(conn) == 1
    assert account is not None and account.id == account_id
    assert (account.email, account.role, account.disabled) == ("ann@example.org", "admin", False)
    assert account.totp_secret is None and account.password_changed_at == NOW
    with pytest.raises(UniqueViolation):
        await new_account(db, email="ANN@example.org")


async def test_an_unknown_role_is_refused_by_the_schema(runtime):
    with pytest.raises(DatabaseError):
        await new_account(runtime.db, email="b@example.org", role="root")


async def test_totp_secret_password_and_flags_update(runtime):
    db = runtime.db
    account_id = await new_account(db)
    async with db.write() as conn:
        await staff_rows.set_totp(conn, account_id, b"\x00encrypted\xff", NOW + 1)
        await staff_rows.set_password(conn, account_id, "$argon2id$new", NOW + 2)
        await staff_rows.set_disabled(conn, account_id, True, NOW + 4)
        await staff_rows.record_login(conn, account_id, NOW + 5)
    async with db.read() as conn:
        account = await staff_rows.account_by_id(conn, account_id)
    assert account.totp_secret == b"\x00encrypted\xff" and account.totp_enrolled_at == NOW + 1
    assert (account.password_hash, account.password_changed_at) == ("$argon2id$new", NOW + 2)
    assert (account.role, account.disabled, account.last_login_at) == ("admin", True, NOW + 5)


async def test_sessions_are_found_by_hash_and_all_end_together(runtime):
    db = runtime.db
    account_id = await new_account(db)
    async with db.write() as conn:
        for n in range(3):
            await staff_rows.insert_session(
                conn,
                session_key=digest(f"s{n}"),
                account_id=account_id,
                csrf_token=f"csrf{n}",
                mfa_passed=n > 0,
                now=NOW + n,
                source_ip="192.0.2.0/24",
                user_agent="Firefox",
            )
    async with db.read() as conn:
        session = await staff_rows.session_by_key(conn, digest("s1"))
        assert await staff_rows.session_by_key(conn, digest("nope")) is None
    assert (session.account_id, session.csrf_token, session.mfa_passed) == (
        account_id,
        "csrf1",
        True,
    )
    async with db.write() as conn:
        await staff_rows.touch_session(conn, digest("s1"), NOW + 60)
        assert await staff_rows.delete_session(conn, digest("s0"))
        assert not await staff_rows.delete_session(conn, digest("s0"))
    async with db.read() as conn:
        assert (await staff_rows.session_by_key(conn, digest("s1"))).last_seen_at == NOW + 60
    async with db.write() as conn:
        # Past the limits: created before NOW + 1 (absolute) or seen before NOW (idle).
        assert await staff_rows.delete_stale_sessions(conn, NOW + 1, NOW) == 0
        assert await staff_rows.delete_sessions_of(conn, account_id) == 2  # sign out everywhere


async def test_a_recovery_code_is_spent_once_even_when_presented_at_once(runtime):
    db = runtime.db
    account_id = await new_account(db)
    codes = [digest(str(n)) for n in range(10)]
    async with db.write() as conn:
        await staff_rows.replace_recovery_codes(conn, account_id, codes)

    async with db.read() as conn:
        unused = await staff_rows.unused_recovery_codes(conn, account_id)
    assert [code_hash for _, code_hash in unused] == codes
    third = unused[3][0]

    async def spend() -> bool:
        async with db.write() as conn:
            return await staff_rows.use_recovery_code(conn, third, NOW)

    results = await asyncio.gather(*(spend() for _ in range(8)))
    assert results.count(True) == 1
    async with db.read() as conn:
        assert len(await staff_rows.unused_recovery_codes(conn, account_id)) == 9


async def test_a_setup_link_is_single_use_and_expires(runtime):
    db = runtime.db
    async with db.write() as conn:
        await staff_rows.insert_setup_link(conn, digest("t1"), "admin", NOW, NOW + 3600)
        await staff_rows.insert_setup_link(conn, digest("t2"), "admin", NOW, NOW + 3600)

    async def use(token: str, at: int) -> str | None:
        async with db.write() as conn:
            return await staff_rows.use_setup_link(conn, digest(token), at)

    results = await asyncio.gather(*(use("t1", NOW + 10) for _ in range(8)))
    assert results.count("admin") == 1 and results.count(None) == 7
    assert await use("t2", NOW + 3600) is None  # expired at its hour
    assert await use("unknown", NOW) is None


async def test_the_audit_log_pages_newest_first(runtime):
    db = runtime.db
    async with db.write() as conn:
        for n in range(25):
            await runtime.licenses.audit.append(
                conn,
                at=NOW + n,
                actor=Actor(ActorKind.STAFF, "1"),
                action="license.suspend",
                target=f"license:{n}",
                detail={"reason": "caf\u00e9 \u2603", "n": n},
                source_ip="192.0.2.0/24",
            )
    async with db.read() as conn:
        first = await staff_rows.audit_page(conn, None, 10)
        second = await staff_rows.audit_page(conn, first[-1]["id"], 10)
        last = await staff_rows.audit_page(conn, second[-1]["id"], 10)
    assert [row["target"] for row in first][:2] == ["license:24", "license:23"]
    assert len(second) == 10 and len(last) == 5
    assert json.loads(last[-1]["detail"]) == {"n": 0, "reason": "caf\u00e9 \u2603"}


async def test_deleting_an_account_takes_its_sessions_and_codes(runtime):
    db = runtime.db
    account_id = await new_account(db)
    async with db.write() as conn:
        await staff_rows.insert_session(
            conn, session_key=digest("s"), account_id=account_id, csrf_token="c",
            mfa_passed=False, now=NOW,
        )  # fmt: skip
        await staff_rows.replace_recovery_codes(conn, account_id, [digest("c")])
        await conn.execute("DELETE FROM staff_accounts WHERE id = ?", (account_id,))
    async with db.read() as conn:
        assert await staff_rows.session_by_key(conn, digest("s")) is None
        assert await staff_rows.unused_recovery_codes(conn, account_id) == []

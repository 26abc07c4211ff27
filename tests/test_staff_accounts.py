"""Staff accounts (issue #12): the first administrator, sign-in with password and TOTP,
recovery codes, sessions and their limits, on the store under test.

Argon2id at its default parameters takes about a quarter of a second here: these tests hash
only where the behaviour under test needs it."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI
from license_server.staff.accounts import (
    GENERIC_REFUSAL,
    PolicyRefused,
    SignInRefused,
    StaffAccounts,
)

PASSWORD = "Correct-Horse-7-Battery"
NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def staff(runtime, clock) -> StaffAccounts:
    service = runtime.licenses
    return StaffAccounts(
        runtime.db, service.write, service.cipher, service.hasher, runtime.once, clock
    )


def code_at(secret: bytes, at: float) -> str:
    return TOTP(secret, 6, SHA1(), 30, enforce_key_length=False).generate(int(at)).decode()


async def first_admin(staff: StaffAccounts) -> int:
    token = await staff.first_admin_link(CLI)
    return await staff.redeem_setup_link(token, "Ann@Example.org", "Ann Admin", PASSWORD)


async def enrolled(staff: StaffAccounts, clock: Clock):
    """An administrator with TOTP set up, signed in with both factors."""
    await first_admin(staff)
    half = await staff.sign_in("ann@example.org", PASSWORD)
    secret = staff.new_totp_secret()
    codes = await staff.enrol(half, secret, code_at(secret, clock.now))
    clock.now += 30
    half = await staff.sign_in("ann@example.org", PASSWORD)
    full = await staff.second_factor(half, code_at(secret, clock.now))
    return full, secret, codes


async def test_the_first_admin_comes_from_a_single_use_link(staff, runtime, clock):
    assert await staff.needs_first_admin()
    token = await staff.first_admin_link(CLI)
    results = await asyncio.gather(
        *(staff.redeem_setup_link(token, f"a{n}@example.org", "A", PASSWORD) for n in range(3)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in results) == 1  # concurrent redeems: one account
    assert all(isinstance(r, int | SignInRefused) for r in results)
    assert not await staff.needs_first_admin()
    async with runtime.db.read() as conn:
        (account,) = await staff_rows.all_accounts(conn)
        audit = await staff_rows.audit_page(conn, None, 10)
    assert account.role == "admin" and account.password_hash.startswith("$argon2id$v=19$")
    assert PASSWORD not in account.password_hash
    assert [row["action"] for row in audit] == ["staff.create", "staff.setup_link"]
    # A second link expires after an hour unused.
    late = await staff.first_admin_link(CLI)
    clock.now += 3600
    with pytest.raises(SignInRefused, match="not valid"):
        await staff.redeem_setup_link(late, "b@example.org", "B", PASSWORD)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short-1A", "12"),
        ("x" * 1_000_000, "128"),  # refused before any hashing: no minute-long request
        ("Ann-Admin-2024!", "name"),
    ],
)
async def test_a_weak_password_is_refused_with_what_to_change(staff, password, problem):
    token = await staff.first_admin_link(CLI)
    with pytest.raises(PolicyRefused) as refused:
        await staff.redeem_setup_link(token, "ann@example.org", "Ann Admin", password)
    assert any(problem in message for message in refused.value.problems)
    assert await staff.needs_first_admin()  # nothing was created, the link still works


async def test_sign_in_refuses_alike_and_needs_the_second_factor(staff, runtime):
    account_id = await first_admin(staff)
    for email, password in (("ann@example.org", "Wrong-Horse-7-Battery"),
                            ("nobody@example.org", PASSWORD)):  # fmt: skip
        with pytest.raises(SignInRefused) as refused:
            await staff.sign_in(email, password)
        assert str(refused.value) == GENERIC_REFUSAL
    half = await staff.sign_in("ANN@example.org", PASSWORD, source_ip="192.0.2.0/24")
    assert half.account.id == account_id and not half.mfa_passed
    assert not half.may("license:read")  # nothing before the second factor
    with pytest.raises(SignInRefused, match="authenticator"):
        await staff.second_factor(half, "123456")
    async with runtime.db.write() as conn:
        await staff_rows.set_disabled(conn, account_id, True, NOW)
    with pytest.raises(SignInRefused) as refused:
        await staff.sign_in("ann@example.org", PASSWORD)
    assert str(refused.value) == GENERIC_REFUSAL


async def test_totp_enrolment_then_sign_in_with_a_code_used_once(staff, runtime, clock):
    full, secret, codes = await enrolled(staff, clock)
    assert full.mfa_passed and full.may("license:read") and full.may("staff:create")
    assert len(codes) == 10 and len(set(codes)) == 10
    async with runtime.db.read() as conn:
        account = await staff_rows.account_by_id(conn, full.account.id)
    assert secret not in account.totp_secret  # encrypted at rest
    # The code just used is refused on a second sign-in in the same 30 s (replay).
    half = await staff.sign_in("ann@example.org", PASSWORD)
    with pytest.raises(SignInRefused):
        await staff.second_factor(half, code_at(secret, clock.now))
    # A recovery code works once, whatever its spelling.
    spelled = codes[0].upper().replace("-", " ")
    assert (await staff.second_factor(half, spelled)).mfa_passed
    again = await staff.sign_in("ann@example.org", PASSWORD)
    with pytest.raises(SignInRefused):
        await staff.second_factor(again, codes[0])


async def test_sessions_rotate_at_the_second_factor_and_end_at_their_limits(staff, clock):
    full, _, _ = await enrolled(staff, clock)
    assert (await staff.session(full.session_id)).mfa_passed
    for garbage in ("", "x" * 100_000, "../../etc", full.session_id[:-1] + "\x00"):
        assert await staff.session(garbage) is None
    clock.now += 29 * 60
    assert await staff.session(full.session_id) is not None  # seen: idle time starts again
    clock.now += 29 * 60
    assert await staff.session(full.session_id) is not None
    clock.now += 31 * 60
    assert await staff.session(full.session_id) is None  # idle for 31 minutes


async def test_a_password_change_ends_every_other_session(staff, clock):
    full, secret, _ = await enrolled(staff, clock)
    clock.now += 30
    other = await staff.second_factor(
        await staff.sign_in("ann@example.org", PASSWORD), code_at(secret, clock.now)
    )
    fresh = await staff.change_password(full, PASSWORD, "Another-Good-Passphrase-9")
    assert await staff.session(other.session_id) is None
    assert await staff.session(full.session_id) is None
    assert (await staff.session(fresh.session_id)).mfa_passed
    assert await staff.sign_out_everywhere(fresh.account.id, actor=fresh.actor) == 1
    assert await staff.session(fresh.session_id) is None


async def test_a_refused_second_factor_spends_no_recovery_code(staff, runtime, clock):
    full, _, codes = await enrolled(staff, clock)
    half = await staff.sign_in("ann@example.org", PASSWORD)
    await staff.sign_out(half)  # the half-signed-in session ends (another tab, a timeout)
    with pytest.raises(SignInRefused, match="ended"):
        await staff.second_factor(half, codes[1])
    async with runtime.db.read() as conn:
        assert len(await staff_rows.unused_recovery_codes(conn, full.account.id)) == 10

"""Queries on staff accounts, their sessions and recovery codes, set-up links, the audit log.

The storage under the staff admin (issue #12); the rules (password policy, TOTP, session
lifetimes, RBAC) live in `license_server/staff/`. Single use is decided by the database, not by
a read before a write: `use_setup_link` and `use_recovery_code` are one conditional UPDATE
each, so two instances presenting the same token at once cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from license_server.db.connection import Connection, Row


@dataclass(frozen=True, slots=True)
class StaffAccount:
    id: int
    email: str
    name: str
    role: str
    password_hash: str
    password_changed_at: int
    totp_secret: bytes | None  # encrypted
    totp_enrolled_at: int | None
    disabled: bool
    last_login_at: int | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class StaffSession:
    id: int
    session_key: bytes
    account_id: int
    csrf_token: str
    mfa_passed: bool
    created_at: int
    last_seen_at: int
    source_ip: str
    user_agent: str


def _account(row: Row | None) -> StaffAccount | None:
    if row is None:
        return None
    values = {**row, "disabled": bool(row["disabled"])}
    if values["totp_secret"] is not None:
        values["totp_secret"] = bytes(values["totp_secret"])
    return StaffAccount(**values)


def _session(row: Row | None) -> StaffSession | None:
    if row is None:
        return None
    return StaffSession(
        **{**row, "session_key": bytes(row["session_key"]), "mfa_passed": bool(row["mfa_passed"])}
    )


# -- accounts ---------------------------------------------------------------------------------


async def count_accounts(conn: Connection) -> int:
    return int(await conn.fetch_value("SELECT COUNT(*) FROM staff_accounts"))


async def insert_account(
    conn: Connection, *, email: str, name: str, role: str, password_hash: str, now: int
) -> int:
    return int(
        await conn.fetch_value(
            "INSERT INTO staff_accounts (email, name, role, password_hash, password_changed_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (email.lower(), name, role, password_hash, now, now, now),
        )
    )


async def account_by_email(conn: Connection, email: str) -> StaffAccount | None:
    return _account(
        await conn.fetch_one("SELECT * FROM staff_accounts WHERE email = ?", (email.lower(),))
    )


async def account_by_id(conn: Connection, account_id: int) -> StaffAccount | None:
    return _account(
        await conn.fetch_one("SELECT * FROM staff_accounts WHERE id = ?", (account_id,))
    )


async def all_accounts(conn: Connection) -> list[StaffAccount]:
    rows = await conn.fetch_all("SELECT * FROM staff_accounts ORDER BY email")
    return [account for account in map(_account, rows) if account is not None]


async def set_password(conn: Connection, account_id: int, password_hash: str, now: int) -> None:
    await conn.execute(
        "UPDATE staff_accounts SET password_hash = ?, password_changed_at = ?, updated_at = ?"
        " WHERE id = ?",
        (password_hash, now, now, account_id),
    )


async def rehash_password(conn: Connection, account_id: int, password_hash: str) -> None:
    """The same password under new hashing parameters: its age does not change."""
    await conn.execute(
        "UPDATE staff_accounts SET password_hash = ? WHERE id = ?", (password_hash, account_id)
    )


async def set_totp(
    conn: Connection, account_id: int, secret_encrypted: bytes | None, now: int
) -> None:
    await conn.execute(
        "UPDATE staff_accounts SET totp_secret = ?, totp_enrolled_at = ?, updated_at = ?"
        " WHERE id = ?",
        (secret_encrypted, None if secret_encrypted is None else now, now, account_id),
    )


async def set_disabled(conn: Connection, account_id: int, disabled: bool, now: int) -> None:
    await conn.execute(
        "UPDATE staff_accounts SET disabled = ?, updated_at = ? WHERE id = ?",
        (disabled, now, account_id),
    )


async def record_login(conn: Connection, account_id: int, now: int) -> None:
    await conn.execute(
        "UPDATE staff_accounts SET last_login_at = ? WHERE id = ?", (now, account_id)
    )


# -- sessions (only a hash of the session id is ever stored) ----------------------------------


async def insert_session(
    conn: Connection,
    *,
    session_key: bytes,
    account_id: int,
    csrf_token: str,
    mfa_passed: bool,
    now: int,
    source_ip: str = "",
    user_agent: str = "",
) -> None:
    await conn.execute(
        "INSERT INTO staff_sessions (session_key, account_id, csrf_token, mfa_passed,"
        " created_at, last_seen_at, source_ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_key, account_id, csrf_token, mfa_passed, now, now, source_ip, user_agent),
    )


async def session_by_key(conn: Connection, session_key: bytes) -> StaffSession | None:
    return _session(
        await conn.fetch_one("SELECT * FROM staff_sessions WHERE session_key = ?", (session_key,))
    )


async def touch_session(conn: Connection, session_key: bytes, now: int) -> None:
    await conn.execute(
        "UPDATE staff_sessions SET last_seen_at = ? WHERE session_key = ? AND last_seen_at < ?",
        (now, session_key, now),
    )


async def delete_session(conn: Connection, session_key: bytes) -> bool:
    return (
        await conn.execute("DELETE FROM staff_sessions WHERE session_key = ?", (session_key,)) > 0
    )


async def delete_sessions_of(conn: Connection, account_id: int) -> int:
    """Every session of the account ("sign out everywhere", a password change)."""
    return await conn.execute("DELETE FROM staff_sessions WHERE account_id = ?", (account_id,))


async def delete_stale_sessions(conn: Connection, created_before: int, seen_before: int) -> int:
    """Sessions past their absolute or idle limit (the limits decide the two times)."""
    return await conn.execute(
        "DELETE FROM staff_sessions WHERE created_at < ? OR last_seen_at < ?",
        (created_before, seen_before),
    )


# -- recovery codes -----------------------------------------------------------------------------


async def replace_recovery_codes(
    conn: Connection, account_id: int, code_hashes: Iterable[bytes]
) -> None:
    await conn.execute("DELETE FROM staff_recovery_codes WHERE account_id = ?", (account_id,))
    await conn.execute_many(
        "INSERT INTO staff_recovery_codes (account_id, code_hash) VALUES (?, ?)",
        [(account_id, code_hash) for code_hash in code_hashes],
    )


async def unused_recovery_codes(conn: Connection, account_id: int) -> list[tuple[int, bytes]]:
    """(id, salted hash) of the codes not spent yet (staff/totp.py matches a code to one)."""
    rows = await conn.fetch_all(
        "SELECT id, code_hash FROM staff_recovery_codes"
        " WHERE account_id = ? AND used_at IS NULL ORDER BY id",
        (account_id,),
    )
    return [(row["id"], bytes(row["code_hash"])) for row in rows]


async def use_recovery_code(conn: Connection, code_id: int, now: int) -> bool:
    """Spend one code: true for exactly one caller, however many present it at once."""
    changed = await conn.execute(
        "UPDATE staff_recovery_codes SET used_at = ? WHERE id = ? AND used_at IS NULL",
        (now, code_id),
    )
    return changed == 1


# -- set-up links -------------------------------------------------------------------------------


async def insert_setup_link(
    conn: Connection, token_hash: bytes, role: str, now: int, expires_at: int
) -> None:
    await conn.execute(
        "INSERT INTO staff_setup_links (token_hash, role, created_at, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (token_hash, role, now, expires_at),
    )


async def use_setup_link(conn: Connection, token_hash: bytes, now: int) -> str | None:
    """Spend a link that is unused and not expired; its role, or None. Single use."""
    changed = await conn.execute(
        "UPDATE staff_setup_links SET used_at = ?"
        " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
        (now, token_hash, now),
    )
    if changed != 1:
        return None
    return await conn.fetch_value(
        "SELECT role FROM staff_setup_links WHERE token_hash = ?", (token_hash,)
    )


# -- the audit log --------------------------------------------------------------------------------


AUDIT_FIELDS = ("at", "actor_kind", "actor_id", "action", "target", "detail", "source_ip")


async def last_audit_hash(conn: Connection) -> bytes | None:
    value = await conn.fetch_value("SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1")
    return None if value is None else bytes(value)


async def insert_audit(conn: Connection, rows: Sequence[tuple[dict, bytes | None, bytes]]) -> None:
    """Rows of the chain, (fields, prev_hash, row_hash) in chain order (licensing/audit.py
    computes the hashes), in one batch: inserted in that order, so their ids keep it."""
    await conn.execute_many(
        "INSERT INTO audit_log (at, actor_kind, actor_id, action, target, detail, source_ip,"
        " prev_hash, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*(fields[name] for name in AUDIT_FIELDS), prev_hash, row_hash)
            for fields, prev_hash, row_hash in rows
        ],
    )


async def audit_rows_after(conn: Connection, after_id: int, limit: int) -> list[Row]:
    rows = await conn.fetch_all(
        "SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
    )
    for row in rows:
        for name in ("prev_hash", "row_hash"):
            if row[name] is not None:
                row[name] = bytes(row[name])
    return rows


async def audit_page(conn: Connection, before_id: int | None, limit: int) -> list[Row]:
    """Newest first; `before_id` continues from the last row of the previous page (keyset
    pagination: as fast on the millionth row as on the first)."""
    if before_id is None:
        return await conn.fetch_all("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
    return await conn.fetch_all(
        "SELECT * FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?", (before_id, limit)
    )

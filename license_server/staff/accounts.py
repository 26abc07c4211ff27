"""Staff accounts: the first administrator, sign-in with a password and a TOTP code, sessions.

What the admin pages (issue #12) stand on; every change goes through the license service's
single write path with its actor, and leaves an audit row in the same transaction.

- First run (ASVS 4.0.3 V2.1, V2.5): with no account, `first_admin_link` makes a one-time set-up
  link (valid one hour, single use, only its keyed hash stored); redeeming it creates the first
  administrator in the same transaction that spends the link.
- Passwords (V2.1.1, V2.1.7, V2.4.1): the policy of `staff/passwords.py`; Argon2id hashed in a
  thread, never on the event loop; re-hashed at sign-in when the parameters changed.
- Sign-in (V2.2.1, V3.2.1): one generic refusal for an unknown email, a wrong password and a
  disabled account, with the same hashing work for an unknown email; a new session id at
  sign-in and again when the second factor is passed (privilege change, V3.2.1).
- Second factor (V2.8): TOTP (RFC 6238, each code accepted once across instances) or one of
  ten single-use recovery codes.
- Sessions (V3.3): stored server-side by the hash of their id; 12 h absolute and 30 min idle
  limits; all of an account's sessions end on a password change or "sign out everywhere".
- Security events (V7.1.3, V7.2.1): each sign-in success and failure (with why: unknown
  account, wrong password, disabled), MFA failure, recovery code used, set-up link used or
  refused, password change and sessions ended is recorded here, where it is decided
  (staff/security_events.py); the answer the visitor gets is the same whatever the event.
- Maximum password age (seed 000, 90-180 days; off by default, ASVS V2.1.10):
  `password_expired`; the admin sends such an account to the password page (web/admin/base.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from license_server.crypto.fields import FieldCipher, LookupHasher
from license_server.db import staff as staff_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.db.errors import UniqueViolation
from license_server.licensing.actors import Actor, ActorKind
from license_server.licensing.audit import AuditLog
from license_server.one_time import OneTimeValues
from license_server.staff import passwords, rbac, sessions, totp
from license_server.staff.security_events import EventKind, SecurityEvents

SETUP_LINK_SECONDS = 3600
_SETUP_PURPOSE = "staff-setup-link"
GENERIC_REFUSAL = "The email address or the password is not right."


class SignInRefused(Exception):
    """Refused, with one message whatever the reason (never which part was wrong)."""

    def __init__(self, message: str = GENERIC_REFUSAL) -> None:
        super().__init__(message)


class PolicyRefused(ValueError):
    """A password (or other input) the policy refuses; the messages say what to change."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A session as a request sees it. `session_id` is the cookie value (never stored)."""

    session_id: str
    account: staff_rows.StaffAccount
    csrf_token: str
    mfa_passed: bool

    @property
    def actor(self) -> Actor:
        return Actor(ActorKind.STAFF, str(self.account.id))

    def may(self, permission: str) -> bool:
        return self.mfa_passed and rbac.has_permission(self.account.role, permission)


def _key(session_id: str) -> bytes:
    return sessions.session_key(session_id)


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class StaffAccounts:
    def __init__(
        self,
        db: Database,
        write_path,  # LicenseService.write: (actor, work) -> work's result
        cipher: FieldCipher,
        hasher: LookupHasher,
        once: OneTimeValues,
        clock: Callable[[], float] = time.time,
        *,
        password_max_age_days: int = 0,
    ) -> None:
        self._db = db
        self._write = write_path
        self._cipher = cipher
        self._hasher = hasher
        self._audit_log = AuditLog(hasher)
        self._once = once
        self.clock = clock  # settable (tests): sessions, codes, events and password age follow
        self.password_max_age_days = password_max_age_days
        self.events = SecurityEvents(db, hasher, lambda: self.clock())

    def now(self) -> int:
        return int(self.clock())

    def password_expired(self, account: staff_rows.StaffAccount) -> bool:
        """Older than `password_max_age_days` (0: never)."""
        return passwords.password_expired(
            _at(account.password_changed_at), _at(self.now()), self.password_max_age_days
        )

    # -- the first administrator ---------------------------------------------------------

    async def needs_first_admin(self) -> bool:
        async with self._db.read() as conn:
            return await staff_rows.count_accounts(conn) == 0

    async def first_admin_link(self, actor: Actor) -> str:
        """A one-time token for the set-up page; only its keyed hash is stored."""
        return await self.invitation(actor, "admin")

    async def invitation(self, actor: Actor, role: str) -> str:
        """A one-time set-up token for a new account with `role` (valid one hour)."""
        if role not in rbac.ROLES:
            raise PolicyRefused([f"role: one of {', '.join(rbac.ROLES)}"])
        token = secrets.token_urlsafe(32)
        now = self.now()

        async def work(writes) -> None:
            await staff_rows.insert_setup_link(
                writes.conn, self._setup_hash(token), role, now, now + SETUP_LINK_SECONDS
            )
            await self._audit(writes.conn, actor, now, "staff.setup_link", "", {"role": role})

        await self._write(actor, work)
        return token

    async def redeem_setup_link(self, token: str, email: str, name: str, password: str) -> int:
        """Create the account the link is for; the link is spent in the same transaction."""
        email = _email(email)
        name = _name(name)
        _check_policy(password, email=email, name=name)
        password_hash = await passwords.hash_password_async(password)
        now = self.now()

        async def work(writes) -> int | None:
            role = await staff_rows.use_setup_link(writes.conn, self._setup_hash(token), now)
            if role is None:
                return None
            account_id = await staff_rows.insert_account(
                writes.conn, email=email, name=name, role=role, password_hash=password_hash,
                now=now,
            )  # fmt: skip
            actor = Actor(ActorKind.STAFF, str(account_id))
            await self._audit(writes.conn, actor, now, "staff.create", f"staff:{account_id}", {})
            return account_id

        try:
            account_id = await self._write(Actor(ActorKind.SYSTEM), work)
        except UniqueViolation:
            raise PolicyRefused(["an account with this email address exists"]) from None
        if account_id is None:
            await self.events.record(EventKind.SETUP_LINK_REFUSED, typed_email=email)
            raise SignInRefused("This set-up link is not valid any more; ask for a new one.")
        await self.events.record(EventKind.SETUP_LINK_USED, account_id=account_id, email=email)
        return account_id

    def _setup_hash(self, token: str) -> bytes:
        return self._hasher.hash(_SETUP_PURPOSE, token)

    # -- accounts ------------------------------------------------------------------------

    async def create_account(
        self, email: str, name: str, role: str, password: str, *, actor: Actor
    ) -> int:
        if role not in rbac.ROLES:
            raise PolicyRefused([f"role: one of {', '.join(rbac.ROLES)}"])
        email, name = _email(email), _name(name)
        _check_policy(password, email=email, name=name)
        password_hash = await passwords.hash_password_async(password)
        now = self.now()

        async def work(writes) -> int:
            account_id = await staff_rows.insert_account(
                writes.conn, email=email, name=name, role=role, password_hash=password_hash,
                now=now,
            )  # fmt: skip
            await self._audit(
                writes.conn, actor, now, "staff.create", f"staff:{account_id}", {"role": role}
            )
            return account_id

        try:
            return await self._write(actor, work)
        except UniqueViolation:
            raise PolicyRefused(["an account with this email address exists"]) from None

    # -- sign-in -------------------------------------------------------------------------

    async def sign_in(
        self, email: str, password: str, *, source_ip: str = "", user_agent: str = ""
    ) -> SignedIn:
        """Password checked: a new session that still needs the second factor."""
        async with self._db.read() as conn:
            account = await staff_rows.account_by_email(conn, email.strip()[:320])
        stored = account.password_hash if account is not None else None
        # The same Argon2id work whether the account exists or not (no user enumeration), and
        # the same one event insert: only the staff's security page tells the reasons apart.
        if not await passwords.verify_password_or_dummy_async(stored, password):
            await self._sign_in_failed(account, email, source_ip, user_agent, "wrong_password")
            raise SignInRefused
        if account is None or account.disabled:
            await self._sign_in_failed(account, email, source_ip, user_agent, "disabled")
            raise SignInRefused
        now = self.now()
        rehash = (
            await passwords.hash_password_async(password)
            if passwords.needs_rehash(account.password_hash)
            else None
        )
        session_id, csrf = sessions.new_session_id(), sessions.new_csrf_token()

        async def work(writes) -> None:
            if rehash is not None:
                await staff_rows.rehash_password(writes.conn, account.id, rehash)
            # Sessions past their limits, of anyone, go here: a sign-in is rare and the table
            # small, and a session never used again is otherwise never read (so never deleted).
            limits = sessions.DEFAULT_TIMES
            await staff_rows.delete_stale_sessions(
                writes.conn, now - int(limits.absolute.total_seconds()),
                now - int(limits.idle.total_seconds()),
            )  # fmt: skip
            await staff_rows.insert_session(
                writes.conn, session_key=_key(session_id), account_id=account.id,
                csrf_token=csrf, mfa_passed=False, now=now, source_ip=source_ip,
                user_agent=user_agent[:256],
            )  # fmt: skip
            await self._audit(
                writes.conn, _staff(account.id), now, "staff.password_ok", "", {}, source_ip
            )

        await self._write(_staff(account.id), work)
        return SignedIn(session_id, account, csrf, mfa_passed=False)

    async def _sign_in_failed(
        self, account, typed: str, source_ip: str, user_agent: str, reason: str
    ) -> None:
        if account is None:
            await self.events.record(
                EventKind.SIGN_IN_FAILED, typed_email=typed, source_ip=source_ip,
                user_agent=user_agent, detail={"reason": "unknown_account"},
            )  # fmt: skip
            return
        await self.events.record(
            EventKind.SIGN_IN_FAILED, account_id=account.id, email=account.email,
            source_ip=source_ip, user_agent=user_agent, detail={"reason": reason},
        )  # fmt: skip

    async def second_factor(
        self, signed_in: SignedIn, code: str, *, source_ip: str = ""
    ) -> SignedIn:
        """A TOTP code or a recovery code: the session is replaced by a new one that has
        passed the second factor (a new id at the privilege change)."""
        account = signed_in.account
        if account.totp_secret is None:
            raise SignInRefused("Set up your authenticator app first.")
        secret = self._totp_secret(account)
        now = self.now()
        recovery = None
        if not await totp.verify_code(
            secret, code, now=now, once=self._once, account_id=account.id
        ):
            async with self._db.read() as conn:
                unused = await staff_rows.unused_recovery_codes(conn, account.id)
            index = totp.match_recovery_code(code, [h for _, h in unused], self._hasher)
            if index is None:
                await self.events.record(
                    EventKind.MFA_FAILED, account_id=account.id, email=account.email,
                    source_ip=source_ip, detail={"step": "sign_in"},
                )  # fmt: skip
                raise SignInRefused("That code is not right (or was used already).")
            recovery = unused[index][0]
        return await self._promote(signed_in, now, recovery, source_ip)

    async def _promote(
        self, signed_in: SignedIn, now: int, recovery: int | None, source_ip: str
    ) -> SignedIn:
        account = signed_in.account
        session_id, csrf = sessions.new_session_id(), sessions.new_csrf_token()

        async def work(writes) -> None:
            # Refusals raise, so that nothing of the unit (a spent recovery code) commits.
            if recovery is not None and not await staff_rows.use_recovery_code(
                writes.conn, recovery, now
            ):
                raise SignInRefused("That code was used already.")  # by a concurrent sign-in
            if not await staff_rows.delete_session(writes.conn, _key(signed_in.session_id)):
                raise SignInRefused("Your sign-in has ended; sign in again.")
            await staff_rows.insert_session(
                writes.conn, session_key=_key(session_id), account_id=account.id,
                csrf_token=csrf, mfa_passed=True, now=now, source_ip=source_ip,
            )  # fmt: skip
            await staff_rows.record_login(writes.conn, account.id, now)
            how = "recovery_code" if recovery is not None else "totp"
            await self._audit(writes.conn, _staff(account.id), now, "staff.sign_in", "",
                              {"second_factor": how}, source_ip)  # fmt: skip

        await self._write(_staff(account.id), work)
        how = "recovery_code" if recovery is not None else "totp"
        if recovery is not None:
            await self.events.record(
                EventKind.RECOVERY_CODE_USED, account_id=account.id, email=account.email,
                source_ip=source_ip,
            )  # fmt: skip
        await self.events.record(
            EventKind.SIGN_IN_OK, account_id=account.id, email=account.email,
            source_ip=source_ip, detail={"second_factor": how},
        )  # fmt: skip
        return SignedIn(session_id, account, csrf, mfa_passed=True)

    # -- TOTP enrolment ------------------------------------------------------------------

    def new_totp_secret(self) -> bytes:
        return totp.new_secret()

    async def enrol(
        self, signed_in: SignedIn, secret: bytes, code: str, *, source_ip: str = ""
    ) -> list[str]:
        """Store the secret once a code from the app proves it was scanned; return the ten
        recovery codes (shown once; stored hashed)."""
        account = signed_in.account
        now = self.now()
        if not await totp.verify_code(
            secret, code, now=now, once=self._once, account_id=account.id
        ):
            await self.events.record(
                EventKind.MFA_FAILED, account_id=account.id, email=account.email,
                source_ip=source_ip, detail={"step": "enrolment"},
            )  # fmt: skip
            raise SignInRefused("That code is not right; check the time on your phone.")
        codes = totp.new_recovery_codes()
        hashes = [totp.hash_recovery_code(c, self._hasher) for c in codes]
        encrypted = self._cipher.encrypt(
            "staff_accounts", "totp_secret", totp.secret_to_text(secret)
        )

        async def work(writes) -> None:
            await staff_rows.set_totp(writes.conn, account.id, encrypted, now)
            await staff_rows.replace_recovery_codes(writes.conn, account.id, hashes)
            await self._audit(writes.conn, _staff(account.id), now, "staff.totp_enrol", "", {})

        await self._write(_staff(account.id), work)
        return codes

    async def enrol_and_sign_in(
        self, signed_in: SignedIn, secret: bytes, code: str, *, source_ip: str = ""
    ) -> tuple[SignedIn, list[str]]:
        """Enrolment proves the second factor as well: the session is promoted (a new id)
        without asking for a second code (the first one was spent on enrolment)."""
        codes = await self.enrol(signed_in, secret, code, source_ip=source_ip)
        refreshed = replace(signed_in, account=await self._account(signed_in.account.id))
        return await self._promote(refreshed, self.now(), None, source_ip), codes

    async def _account(self, account_id: int) -> staff_rows.StaffAccount:
        async with self._db.read() as conn:
            account = await staff_rows.account_by_id(conn, account_id)
        if account is None:
            raise SignInRefused("This account does not exist any more.")
        return account

    def _totp_secret(self, account: staff_rows.StaffAccount) -> bytes:
        assert account.totp_secret is not None
        return totp.secret_from_text(
            self._cipher.decrypt("staff_accounts", "totp_secret", account.totp_secret)
        )

    # -- sessions ------------------------------------------------------------------------

    async def session(self, session_id: str) -> SignedIn | None:
        """The live session for a cookie value, its idle time renewed; None if unknown,
        expired (then deleted) or its account disabled."""
        if not sessions.is_session_id(session_id):
            return None
        key, now = _key(session_id), self.now()
        async with self._db.read() as conn:
            row = await staff_rows.session_by_key(conn, key)
            account = None if row is None else await staff_rows.account_by_id(conn, row.account_id)
        if row is None or account is None:
            return None
        if account.disabled or sessions.expired(
            _at(row.created_at), _at(row.last_seen_at), _at(now)
        ):
            await self._transaction(lambda conn: staff_rows.delete_session(conn, key))
            return None
        if now - row.last_seen_at >= 60:  # one write a minute per session, not per request
            await self._transaction(lambda conn: staff_rows.touch_session(conn, key, now))
        return SignedIn(session_id, account, row.csrf_token, row.mfa_passed)

    async def set_disabled(self, account_id: int, disabled: bool, *, actor: Actor) -> None:
        """Disabling also ends every session of the account at once."""
        now = self.now()

        async def work(writes) -> None:
            await staff_rows.set_disabled(writes.conn, account_id, disabled, now)
            if disabled:
                await staff_rows.delete_sessions_of(writes.conn, account_id)
            action = "staff.disable" if disabled else "staff.enable"
            await self._audit(writes.conn, actor, now, action, f"staff:{account_id}", {})

        await self._write(actor, work)

    async def reset_second_factor(self, account_id: int, *, actor: Actor) -> None:
        """A lost phone: the account enrols again at its next sign-in; its sessions and
        recovery codes end now."""
        now = self.now()

        async def work(writes) -> None:
            await staff_rows.set_totp(writes.conn, account_id, None, now)
            await staff_rows.replace_recovery_codes(writes.conn, account_id, [])
            await staff_rows.delete_sessions_of(writes.conn, account_id)
            await self._audit(writes.conn, actor, now, "staff.reset_mfa", f"staff:{account_id}", {})

        await self._write(actor, work)

    async def all_accounts(self) -> list[staff_rows.StaffAccount]:
        async with self._db.read() as conn:
            return await staff_rows.all_accounts(conn)

    async def sign_out(self, signed_in: SignedIn) -> None:
        now = self.now()

        async def work(writes) -> None:
            await staff_rows.delete_session(writes.conn, _key(signed_in.session_id))
            await self._audit(writes.conn, signed_in.actor, now, "staff.sign_out", "", {})

        await self._write(signed_in.actor, work)
        account = signed_in.account
        await self.events.record(EventKind.SESSIONS_ENDED, account_id=account.id,
                                 email=account.email, detail={"how": "sign_out"})  # fmt: skip

    async def sign_out_everywhere(self, account_id: int, *, actor: Actor) -> int:
        now = self.now()

        async def work(writes) -> int:
            ended = await staff_rows.delete_sessions_of(writes.conn, account_id)
            await self._audit(writes.conn, actor, now, "staff.sign_out_everywhere",
                              f"staff:{account_id}", {"sessions": ended})  # fmt: skip
            return ended

        ended = await self._write(actor, work)
        await self.events.record(
            EventKind.SESSIONS_ENDED, account_id=account_id,
            detail={"how": "everywhere", "sessions": ended, "by": str(actor)},
        )  # fmt: skip
        return ended

    async def change_password(self, signed_in: SignedIn, current: str, new: str) -> SignedIn:
        """Every session of the account ends (V3.3.3); the caller gets a fresh one."""
        account = signed_in.account
        if not await passwords.verify_password_async(account.password_hash, current):
            await self.events.record(
                EventKind.PASSWORD_CHANGE_FAILED, account_id=account.id, email=account.email
            )
            raise SignInRefused("The current password is not right.")
        _check_policy(new, email=account.email, name=account.name)
        password_hash = await passwords.hash_password_async(new)
        now = self.now()
        session_id, csrf = sessions.new_session_id(), sessions.new_csrf_token()

        async def work(writes) -> int:
            await staff_rows.set_password(writes.conn, account.id, password_hash, now)
            ended = await staff_rows.delete_sessions_of(writes.conn, account.id)
            await staff_rows.insert_session(
                writes.conn, session_key=_key(session_id), account_id=account.id,
                csrf_token=csrf, mfa_passed=signed_in.mfa_passed, now=now,
            )  # fmt: skip
            await self._audit(writes.conn, signed_in.actor, now, "staff.password_change", "", {})
            return ended

        ended = await self._write(signed_in.actor, work)
        await self.events.record(EventKind.PASSWORD_CHANGED, account_id=account.id,
                                 email=account.email, detail={"sessions_ended": ended})  # fmt: skip
        fresh = replace(account, password_changed_at=now)
        return SignedIn(session_id, fresh, csrf, signed_in.mfa_passed)

    async def _transaction(self, statement) -> None:
        await self._db.transaction(statement)

    async def _audit(
        self, conn: Connection, actor: Actor, now: int, action: str, target: str, detail: dict,
        source_ip: str = "",
    ) -> None:  # fmt: skip
        await self._audit_log.append(
            conn, at=now, actor=actor, action=action, target=target, detail=detail,
            source_ip=source_ip,
        )  # fmt: skip


def _staff(account_id: int) -> Actor:
    return Actor(ActorKind.STAFF, str(account_id))


def _email(value: str) -> str:
    email = value.strip().lower()
    if not 3 <= len(email) <= 320 or email.count("@") != 1 or email.startswith("@"):
        raise PolicyRefused(["email: an address like name@example.com"])
    return email


def _name(value: str) -> str:
    name = " ".join(value.split())
    if not 1 <= len(name) <= 200 or any(ord(c) < 32 for c in name):
        raise PolicyRefused(["name: 1 to 200 characters"])
    return name


def _check_policy(password: str, *, email: str, name: str) -> None:
    problems = passwords.check_password(password, email=email, name=name)
    if problems:
        raise PolicyRefused(problems)

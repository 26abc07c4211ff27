"""E-mailed confirmation of a release or reissue on the customer page (`[portal] smtp_*`).

With an SMTP server configured, whoever holds a license key cannot free its sites at once: the
licensee's address (stored encrypted, `LicenseService.open_email`) gets a link valid
`CONFIRM_SECONDS` and usable once, and only opening it and pressing the button does it (a GET
never changes anything: mail scanners open links). Only a SHA-256 of the link's token is
stored (migration 16); spending it happens in the action's own transaction, so a link is spent
exactly when its action is done (db/portal.spend_confirmation: of two concurrent uses, one).

Sending uses the standard library's smtplib in a worker thread (it blocks), with STARTTLS
before any password when `smtp_starttls` (ASVS 4.0.3 V9.2.1; a server that does not offer it
gets nothing), the certificate checked against the system's trust store.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import smtplib
import ssl
from email.message import EmailMessage

from license_server.db import portal as portal_rows
from license_server.db.connection import Connection
from license_server.db.database import Database
from license_server.settings import PortalSettings

CONFIRM_SECONDS = 30 * 60
ACTIONS = ("release", "reissue")


class LinkNotUsable(Exception):
    """The link is unknown, used already, expired, or for another license or action."""


def link_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


async def new_link(db: Database, license_id: int, action: str, value: str, now: int) -> str:
    """A confirmation link's token for one action; its hash is stored, valid 30 minutes.
    Links past their time are deleted on the way."""
    if action not in ACTIONS:
        raise ValueError(action)
    token = secrets.token_urlsafe(32)
    async with db.write() as conn:
        await portal_rows.delete_old_confirmations(conn, now - CONFIRM_SECONDS)
        await portal_rows.insert_confirmation(
            conn, link_hash(token), license_id, action, value, now, now + CONFIRM_SECONDS
        )
    return token


async def pending_link(db: Database, token: str, now: int) -> dict | None:
    """The link's row if it can still be used (for the confirm page), else None."""
    if not token or len(token) > 100 or not token.isascii():
        return None
    async with db.read() as conn:
        row = await portal_rows.confirmation_by_hash(conn, link_hash(token))
    if row is None or row["used_at"] is not None or row["expires_at"] <= now:
        return None
    return row


def spender(token: str, row: dict, now: int):
    """`within(conn)` for the service's write: spends the link in the action's transaction."""

    async def spend(conn: Connection) -> None:
        if not await portal_rows.spend_confirmation(conn, link_hash(token), now):
            raise LinkNotUsable("this link was used already or has expired")

    return spend


class Mailer:
    def __init__(self, settings: PortalSettings) -> None:
        self._settings = settings

    async def send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        s = self._settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_username, password)
            smtp.send_message(message)

"""Security events: what happened at the door of the staff admin, recorded where it happens.

Seed 000 ("Security Logging and Monitoring") and issue #12: sign-in success and failure, MFA
failure, permission denied, rate limited, set-up link used (and a few more below). ASVS 4.0.3:
- V7.1.3: security events are logged, with what an investigation needs (time, kind, account,
  source address, user agent, detail).
- V7.2.1: every authentication decision is logged, the failures with the reason, and without
  any secret: no password, code or token is ever passed in.
- V7.2.2: every failed access-control decision (permission denied) is logged.

Kept apart from the audit log of staff actions (licensing/audit.py): events are many, mostly
refusals of nobody in particular, and pruned after `[staff] security_event_retention_days`.

The e-mail address typed at sign-in. For a known account the row keeps the account's id and
own address (already stored in clear in staff_accounts). When it matches no account, what was
typed may be anything, typically a password typed into the wrong box; it is never stored nor
logged in clear: only a keyed hash (HMAC under the data key, like the licensee e-mail blind
index) is kept, so that the page can still find "every attempt that typed X" when staff type X
into its filter, and shows a short fingerprint of the hash so one unknown address retried is
told from many. The application log line masks the address (`a***@example.org`) or, for an
unknown one, gives the same fingerprint; the IP is masked there as in the access log.

Cost (issue #12: signing in must not slow verification): recording is one INSERT in its own
short transaction, nothing read first; a failure to record is logged and swallowed, never the
request's failure. A 429 storm from one address would otherwise be one write per refused
request: only the first refusal of each identity within its window is recorded.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from license_server.crypto.fields import LookupHasher
from license_server.db import security_events as event_rows
from license_server.db.database import Database

log = logging.getLogger("license_server.security")

_EMAIL_PURPOSE = "security-event-email"
MAX_USER_AGENT = 200
MAX_TYPED_EMAIL = 320
_PRUNE_BATCH = 1000


# The request being answered: (source IP, User-Agent), set by the admin's middleware, so that an
# event recorded deep in a service names where it came from without every caller passing it.
request_origin: ContextVar[tuple[str, str]] = ContextVar("request_origin", default=("", ""))


class EventKind(StrEnum):
    SIGN_IN_OK = "sign_in_ok"  # both factors passed
    SIGN_IN_FAILED = "sign_in_failed"  # password step refused (detail: why)
    MFA_FAILED = "mfa_failed"  # a wrong TOTP / recovery code (sign-in or enrolment)
    RECOVERY_CODE_USED = "recovery_code_used"
    SETUP_LINK_USED = "setup_link_used"  # an account made through a one-time link
    SETUP_LINK_REFUSED = "setup_link_refused"  # a spent, expired or unknown link
    # Event kinds, not secrets (ruff S105 / bandit B105 take them for passwords).
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 # nosec B105
    # The current password was wrong.
    PASSWORD_CHANGE_FAILED = "password_change_failed"  # noqa: S105 # nosec B105
    SESSIONS_ENDED = "sessions_ended"  # sign out (everywhere)
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMITED = "rate_limited"
    # A signed-in session's POST refused by the Origin / Sec-Fetch-Site or CSRF token check.
    FORGED_REQUEST = "forged_request"


KINDS: tuple[str, ...] = tuple(kind.value for kind in EventKind)


def fingerprint(email_hash: bytes) -> str:
    """What the page and the log show for an address that matched no account."""
    return "#" + email_hash.hex()[:8]


def mask_email(email: str) -> str:
    """`ann@example.org` -> `a***@example.org`, for log lines (PII masking, seed 003)."""
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _clean(text: str, limit: int) -> str:
    """Cut, and printable only: a user agent is the client's to choose (no forged lines)."""
    text = text[:limit]
    return "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in text)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """What the observers of stored events are told (no e-mail, no user agent)."""

    kind: str
    at: int  # seconds
    account_id: int | None
    source_ip: str


class SecurityEvents:
    def __init__(
        self, db: Database, hasher: LookupHasher, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._hasher = hasher
        self.clock = clock
        # identity -> end of its rate-limit window: refusals already recorded (bounded).
        self._limited: OrderedDict[str, float] = OrderedDict()
        # Told of each event after it is stored (the sign-in detectors: staff/sign_in_watch.py).
        self._observers: list[Callable[[RecordedEvent], None]] = []

    def observe(self, observer: Callable[[RecordedEvent], None]) -> None:
        """`observer(event)` after each event commits: cheap, synchronous, on the loop."""
        self._observers.append(observer)

    def email_hash(self, typed: str) -> bytes:
        """The keyed hash of an address as typed (trimmed, lower case), as the filter uses."""
        return self._hasher.hash(_EMAIL_PURPOSE, typed.strip().lower()[:MAX_TYPED_EMAIL])

    async def record(
        self,
        kind: EventKind,
        *,
        account_id: int | None = None,
        email: str = "",
        typed_email: str | None = None,
        source_ip: str = "",
        user_agent: str = "",
        detail: dict | None = None,
    ) -> None:
        """One event: `email` is a known account's address; `typed_email` what was typed
        when no account matched (kept only as a keyed hash). The source IP and user agent
        default to the request's (`request_origin`). Never raises."""
        try:
            origin_ip, origin_agent = request_origin.get()
            source_ip = source_ip or origin_ip
            user_agent = user_agent or origin_agent
            at = int(self.clock())
            email_hash = None
            if typed_email is not None:
                email_hash = self.email_hash(typed_email)
            elif email:
                email_hash = self.email_hash(email)
            agent = _clean(user_agent, MAX_USER_AGENT)
            detail_text = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False)
            self._log(kind, account_id, email, email_hash, source_ip, detail_text)
            row = {
                "at": at, "kind": str(kind), "account_id": account_id, "email": email,
                "email_hash": email_hash, "source_ip": source_ip[:64], "user_agent": agent,
                "detail": detail_text,
            }  # fmt: skip
            await self._db.transaction(lambda conn: event_rows.insert_event(conn, **row))
        except Exception:
            log.exception("a security event (%s) could not be recorded", kind)
            return
        event = RecordedEvent(str(kind), at, account_id, source_ip[:64])
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("a security event observer failed; the event is stored")

    def _log(self, kind, account_id, email, email_hash, source_ip, detail_text) -> None:
        if email:
            shown = mask_email(email)
        elif email_hash is not None:
            shown = "unknown" + fingerprint(email_hash)
        else:
            shown = "-"
        fields = {
            "kind": str(kind),
            "account": account_id,
            "email": shown,
            "ip": _masked_ip(source_ip),
            "detail": json.loads(detail_text),
        }
        # One line of JSON (key order fixed), and the same fields for a structured handler.
        log.info(
            "security_event %s",
            json.dumps(fields, sort_keys=True, ensure_ascii=True),
            extra={"security_event": fields},
        )

    def first_refusal(self, identity: str, window_end: float) -> bool:
        """True once per identity and rate-limit window: the refusal worth recording."""
        now = time.monotonic()
        known = self._limited.get(identity)
        if known is not None and known > now:
            return False
        self._limited[identity] = window_end
        self._limited.move_to_end(identity)
        while len(self._limited) > 10_000:  # a spread storm: forget the oldest
            self._limited.popitem(last=False)
        return True


async def prune(db: Database, retention_days: int, *, now: int | None = None) -> int:
    """Delete events older than the retention, in short transactions of 1000 rows (the
    attempt log's pruner calls this too: app.py)."""
    before = (int(time.time()) if now is None else now) - retention_days * 86400
    deleted = 0
    while True:
        count = await db.transaction(
            lambda conn: event_rows.prune_events(conn, before, _PRUNE_BATCH)
        )
        deleted += count
        if count < _PRUNE_BATCH:
            return deleted


def _masked_ip(address: str) -> str:
    """IPv4 /24, IPv6 /48, as the access log masks them (web/access_log.py; `staff` does
    not import `web`)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "-"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False))

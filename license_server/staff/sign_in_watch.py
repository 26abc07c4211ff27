"""The staff-side detectors (issue #15, seed 003 "Anomaly Detection"): fed by the security
events as they are stored (staff/security_events.py), state rebuilt from them at start-up.

- `staff_new_network`: a member of staff signs in (both factors) from a network (IPv4 /24,
  IPv6 /48) that account has not signed in from within `new_network_history_days`. Low; medium
  when sign-in failures came from that same address within the failure window just before (a
  password that was guessed looks like that). An account with no sign-in in the history at all
  raises nothing: there is nothing to compare with (its first sign-in, or the first after a
  long absence).
- `staff_sign_in_failures`: more than `sign_in_failure_limit` failed sign-ins (password or
  second factor) from one IP within `sign_in_failure_window_seconds`: high, and that IP's admin
  sign-in is blocked for `sign_in_block_minutes` (the seed's "brute force -> block_ip"). This
  builds on the sign-in throttle (web/admin/base.py `SignInLimiter`, 5 attempts a minute per
  IP and per account), which stops bursts: the block stops the slow, sustained guessing the
  per-minute window lets through, and the throttle's own check refuses a blocked IP
  (ASVS 4.0.3 V2.2.1), in the same rate-limit store, so there is no second limiter.

Memory is bounded: failures are kept for the window only, per IP (at most `MAX_IPS` IPs, the
oldest dropped first); networks per account for the history. Each instance watches the events
its own process records; the alert itself is de-duplicated across instances by the store.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from license_server.db import security_events as event_rows
from license_server.db.database import Database
from license_server.licensing.alert_actions import AlertActions, Blocker, record_action
from license_server.licensing.alerts import Alerts, AlertSignal, Severity
from license_server.settings import StaffSettings
from license_server.staff.security_events import EventKind, RecordedEvent

log = logging.getLogger(__name__)

NEW_NETWORK = "staff_new_network"
FAILURES = "staff_sign_in_failures"
FAILURE_KINDS = (EventKind.SIGN_IN_FAILED.value, EventKind.MFA_FAILED.value)
MAX_IPS = 10_000
REBUILD_LIMIT = 200_000  # events read at start-up, the newest


def network_of(ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class SignInWatch:
    def __init__(
        self,
        settings: StaffSettings,
        alerts: Alerts,
        actions: AlertActions,
        blocker: Blocker | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._alerts = alerts
        self._actions = actions  # runs the async work as tracked tasks (drain())
        self._blocker = blocker
        self._clock = clock
        self._failures: OrderedDict[str, deque[int]] = OrderedDict()  # ip -> times
        self._networks: dict[int, dict[str, int]] = {}  # account -> network -> last seen

    async def rebuild(self, db: Database) -> int:
        """State from the stored events: the failure window and the sign-in history."""
        now = int(self._clock())
        history = now - self._settings.new_network_history_days * 86400
        async with db.read() as conn:
            rows = await event_rows.recent_of_kinds(
                conn, (EventKind.SIGN_IN_OK.value, *FAILURE_KINDS), history, REBUILD_LIMIT
            )
        for row in rows:
            event = RecordedEvent(row["kind"], int(row["at"]), row["account_id"], row["source_ip"])
            self._learn(event, now)
        return len(rows)

    def observe(self, event: RecordedEvent) -> None:
        """For `SecurityEvents.observe`."""
        now = int(self._clock())
        if event.kind in FAILURE_KINDS and event.source_ip:
            count = self._learn(event, now)
            if count > self._settings.sign_in_failure_limit:
                self._actions.spawn(self._brute_force(event.source_ip, count))
        elif event.kind == EventKind.SIGN_IN_OK.value and event.account_id is not None:
            network = network_of(event.source_ip)
            known = set(self._networks.get(event.account_id, ()))  # before learning this one
            self._learn(event, now)
            if (self._settings.new_network_alerts and network is not None and known
                    and network not in known):  # fmt: skip
                recent = len(self._recent_failures(event.source_ip, now))
                self._actions.spawn(self._new_network(event, network, recent, sorted(known)))

    def _learn(self, event: RecordedEvent, now: int) -> int:
        if event.kind in FAILURE_KINDS:
            times = self._recent_failures(event.source_ip, now)
            if event.at > now - self._settings.sign_in_failure_window_seconds:
                times.append(event.at)
            self._failures[event.source_ip] = times
            self._failures.move_to_end(event.source_ip)
            while len(self._failures) > MAX_IPS:
                self._failures.popitem(last=False)
            return len(times)
        network = network_of(event.source_ip)
        if event.account_id is not None and network is not None:
            seen = self._networks.setdefault(event.account_id, {})
            seen[network] = event.at
            cutoff = now - self._settings.new_network_history_days * 86400
            for old in [n for n, at in seen.items() if at < cutoff]:
                del seen[old]
        return 0

    def _recent_failures(self, ip: str, now: int) -> deque[int]:
        times = self._failures.get(ip, deque())
        cutoff = now - self._settings.sign_in_failure_window_seconds
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    async def _brute_force(self, ip: str, count: int) -> None:
        window = self._settings.sign_in_failure_window_seconds
        minutes = self._settings.sign_in_block_minutes
        signal = AlertSignal(
            FAILURES, f"ip:{ip}", Severity.HIGH,
            f"{count} failed staff sign-ins from {ip} within {window // 60 or 1} minutes: "
            "someone may be guessing passwords or codes."
            + (f" Its admin sign-in is blocked for {minutes} minutes." if minutes else ""),
            {"failures": count, "window_seconds": window, "ip": ip},
        )  # fmt: skip
        raised = await self._alerts.raise_(signal)
        if minutes and self._blocker is not None and await self._blocker.block(ip, "sign-in"):
            await record_action(
                self._actions.service, raised.alert_id,
                f"blocked admin sign-in from {ip} for {minutes} minutes",
                {"blocked": ip, "minutes": minutes, "scope": "sign-in"},
            )  # fmt: skip

    async def _new_network(
        self, event: RecordedEvent, network: str, failures: int, known: list[str]
    ) -> None:
        severity = Severity.MEDIUM if failures else Severity.LOW
        summary = (
            f"Staff account {event.account_id} signed in from {network}, a network it has not "
            f"used in the last {self._settings.new_network_history_days} days"
            + (f", after {failures} failed sign-ins from that address." if failures else ".")
        )
        await self._alerts.raise_(
            AlertSignal(
                NEW_NETWORK, f"staff:{event.account_id}:net:{network}", severity, summary,
                {"account_id": event.account_id, "ip": event.source_ip, "network": network,
                 "known_networks": known[:20], "recent_failures": failures},
            )
        )  # fmt: skip

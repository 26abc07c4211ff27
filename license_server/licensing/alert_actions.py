"""Automatic actions on alerts (issue #15): what the server does on its own when a detector
raises an alert, per detector, off unless `[alert_actions] detectors` names one.

- `block_ip`: the address or network the alert is about (its subject `ip:...` / `net:...`, or
  `ip` / `source_ip` / `network` in its evidence) is refused on verification and on the admin
  sign-in for `block_minutes` (web/rate_limit.py `IpBlocks`: the rate-limit store, shared
  through Redis). A temporary block rather than a ban: a ban answers `suspended` to every
  module behind that address for ever, until staff lift it by hand; a guessing bot needs a
  pause, not a verdict on the site. Re-raised while blocked: nothing more; raised after the
  block lifted: blocked again.
- `flag_license`: the license page shows a marker while the alert is unresolved (no column
  of its own: the alert is the flag, and resolving it is how staff clear it).
- `suspend_license`: the license is suspended through the service's write path with the actor
  `system:anomaly` (audited as `license.suspend`); staff unsuspend it as any other.

Each action taken is appended to the alert's `actions_taken` ("action taken: ..." on its page,
in `evidence.actions_taken` in the API) and written to the audit log as `alert.action` (target
`alert:<id>`, actor `system:anomaly`) in one transaction. License actions run when an alert
opens, not on each bump (a suspended license stays suspended; a license staff unsuspended is
not suspended again by the same unresolved alert).

Listeners are called after the alert's commit, on the event loop and synchronously
(licensing/alerts.py), so each action runs as a task; `drain()` waits for them (tests, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from license_server.db import alerts as alert_rows
from license_server.licensing import lifecycle
from license_server.licensing.actors import Actor, ActorKind
from license_server.licensing.alerts import AlertSignal, RaisedAlert
from license_server.licensing.service import LicenseService

log = logging.getLogger(__name__)

ANOMALY = Actor(ActorKind.SYSTEM, "anomaly")


class Blocker(Protocol):
    async def block(self, target: str, scope: str) -> bool: ...


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def record_action(
    service: LicenseService, alert_id: int, text: str, detail: dict | None = None
) -> None:
    """ "action taken: `text`" on the alert and an `alert.action` audit row, one transaction."""

    async def work(writes) -> None:
        await alert_rows.note_action(writes.conn, alert_id, f"{_iso(writes.now)} {text}")
        await service.audit.append(
            writes.conn, at=writes.now, actor=ANOMALY, action="alert.action",
            target=f"alert:{alert_id}", detail={"action": text, **(detail or {})},
        )  # fmt: skip

    await service.write(ANOMALY, work)


def block_targets(signal: AlertSignal, canonical: Callable[[str], str | None]) -> list[str]:
    """The addresses / networks an alert is about, canonical, at most 16."""
    found: list[str] = []
    kind, _, value = signal.subject.partition(":")
    if kind in ("ip", "net") and value:
        found.append(value)
    for name in ("ip", "source_ip", "network"):
        value = signal.evidence.get(name)
        if isinstance(value, str):
            found.append(value)
    targets = []
    for text in found:
        target = canonical(text[:64])
        if target is not None and target not in targets:
            targets.append(target)
    return targets[:16]


class AlertActions:
    def __init__(
        self,
        service: LicenseService,
        actions: Callable[[str], str],
        blocker: Blocker | None,
        canonical: Callable[[str], str | None],
        block_minutes: int,
        block_scope: str = "all",
    ) -> None:
        self.service = service
        self._service = service
        self._action = actions  # detector -> action name
        self._blocker = blocker
        self._canonical = canonical
        self._block_minutes = block_minutes
        self._block_scope = block_scope
        self._tasks: set[asyncio.Task] = set()

    def listener(self, signal: AlertSignal, raised: RaisedAlert) -> None:
        """For `Alerts.subscribe`: start the detector's action, if it has one."""
        action = self._action(signal.detector)
        if action == "none":
            return
        self.spawn(self.run(action, signal, raised))

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an automatic alert action failed", exc_info=task.exception())

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self, action: str, signal: AlertSignal, raised: RaisedAlert) -> None:
        if action == "block_ip":
            await self._block(signal, raised)
        elif not raised.new:
            return
        elif signal.license_id is None:
            await record_action(self._service, raised.alert_id,
                                f"none ({action}: the alert names no license)")  # fmt: skip
        elif action == "flag_license":
            await record_action(
                self._service, raised.alert_id, f"flagged license {signal.license_id}",
                {"license_id": signal.license_id},
            )  # fmt: skip
        elif action == "suspend_license":
            await self._suspend(signal.license_id, raised.alert_id)

    async def _block(self, signal: AlertSignal, raised: RaisedAlert) -> None:
        targets = block_targets(signal, self._canonical)
        if self._blocker is None or not targets:
            if raised.new:
                await record_action(self._service, raised.alert_id,
                                    "none (block_ip: no address or /24, /48, /64 network in "
                                    "the alert)")  # fmt: skip
            return
        for target in targets:
            if await self._blocker.block(target, self._block_scope):
                await record_action(
                    self._service, raised.alert_id,
                    f"blocked {target} for {self._block_minutes} minutes",
                    {"blocked": target, "minutes": self._block_minutes},
                )  # fmt: skip

    async def _suspend(self, license_id: int, alert_id: int) -> None:
        try:
            await self._service.apply(license_id, lifecycle.Action.SUSPEND, actor=ANOMALY)
        except (LookupError, ValueError, lifecycle.TransitionRefused) as refused:
            text = f"none (license {license_id} not suspended: {refused})"
            await record_action(self._service, alert_id, text[:300], {"license_id": license_id})
            return
        await record_action(self._service, alert_id, f"suspended license {license_id}",
                            {"license_id": license_id})  # fmt: skip

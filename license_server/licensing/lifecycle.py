"""License lifecycle: which transitions exist, from which statuses, and what each one changes.

    issue ─▶ pending ──first check binds──▶ active
    active/pending ──suspend──▶ suspended ──unsuspend──▶ active (pending if nothing is bound)
    active/pending/suspended ──expire──▶ expired ──renew──▶ active/pending
    active/pending ──reissue──▶ pending (bindings freed; counted, capped per product)
    any but revoked ──revoke──▶ revoked (terminal: a leaked or refunded key never comes back)

Pure functions over a small state record, so every rule is testable without a database; the
service applies the returned `Transition` in one write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from license_server.licensing.models import Status


class Action(StrEnum):
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    UNSUSPEND = "unsuspend"
    EXPIRE = "expire"
    RENEW = "renew"
    REVOKE = "revoke"
    REISSUE = "reissue"


class TransitionRefused(Exception):
    """The action is not allowed from the license's current status; says why in one line."""


class ReissueLimitReached(TransitionRefused):
    """The product's `max_reissues` is used up."""


class ReissueCooldown(TransitionRefused):
    """The last reissue was too recent; `until` is when the next one is allowed (UTC s)."""

    def __init__(self, message: str, until: int) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True, slots=True)
class LicenseState:
    status: Status
    expires_at: int | None
    reissue_count: int
    has_bindings: bool


@dataclass(frozen=True, slots=True)
class Transition:
    status: Status
    expires_at: int | None
    reissue_count: int
    clear_bindings: bool = False


_ALLOWED_FROM: dict[Action, frozenset[Status]] = {
    Action.ACTIVATE: frozenset({Status.PENDING}),
    Action.SUSPEND: frozenset({Status.ACTIVE, Status.PENDING}),
    Action.UNSUSPEND: frozenset({Status.SUSPENDED}),
    Action.EXPIRE: frozenset({Status.ACTIVE, Status.PENDING, Status.SUSPENDED}),
    Action.RENEW: frozenset({Status.ACTIVE, Status.PENDING, Status.EXPIRED}),
    Action.REVOKE: frozenset({Status.ACTIVE, Status.PENDING, Status.SUSPENDED, Status.EXPIRED}),
    Action.REISSUE: frozenset({Status.ACTIVE, Status.PENDING}),
}

_UNSET = object()


def transition(
    state: LicenseState,
    action: Action,
    *,
    now: int,
    new_expiry: int | object | None = _UNSET,
    max_reissues: int | None = None,
    reissue_not_before: int | None = None,
) -> Transition:
    """The result of `action` on `state`, or TransitionRefused with the reason."""
    if state.status not in _ALLOWED_FROM[action]:
        raise TransitionRefused(f"cannot {action} a license that is {state.status}")
    waiting_or_active = Status.ACTIVE if state.has_bindings else Status.PENDING
    if action is Action.ACTIVATE:
        return Transition(Status.ACTIVE, state.expires_at, state.reissue_count)
    if action is Action.SUSPEND:
        return Transition(Status.SUSPENDED, state.expires_at, state.reissue_count)
    if action is Action.UNSUSPEND:
        lapsed = state.expires_at is not None and state.expires_at <= now
        status = Status.EXPIRED if lapsed else waiting_or_active
        return Transition(status, state.expires_at, state.reissue_count)
    if action is Action.EXPIRE:
        return Transition(Status.EXPIRED, state.expires_at, state.reissue_count)
    if action is Action.RENEW:
        if new_expiry is _UNSET:
            raise TransitionRefused("renew needs a new expiry date (or none for no expiry)")
        if new_expiry is not None and new_expiry <= now:  # type: ignore[operator]
            raise TransitionRefused("the new expiry date must be in the future")
        status = waiting_or_active if state.status is Status.EXPIRED else state.status
        return Transition(status, new_expiry, state.reissue_count)  # type: ignore[arg-type]
    if action is Action.REVOKE:
        return Transition(Status.REVOKED, state.expires_at, state.reissue_count)
    # REISSUE
    if max_reissues is not None and state.reissue_count >= max_reissues:
        raise ReissueLimitReached(f"the reissue limit ({max_reissues}) has been reached")
    if reissue_not_before is not None and now < reissue_not_before:
        raise ReissueCooldown("the reissue cooldown has not ended", reissue_not_before)
    return Transition(
        Status.PENDING, state.expires_at, state.reissue_count + 1, clear_bindings=True
    )


def effective_status(status: Status, expires_at: int | None, now: int) -> Status:
    """A license past its expiry is expired even before a job persists the transition."""
    if expires_at is not None and expires_at <= now and status in (Status.ACTIVE, Status.PENDING):
        return Status.EXPIRED
    return status

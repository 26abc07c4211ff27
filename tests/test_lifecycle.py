"""Every lifecycle transition and every refused one, as pure rules and through the service."""

from __future__ import annotations

import pytest

from license_server.db import licenses as license_rows
from license_server.licensing.lifecycle import (
    Action,
    LicenseState,
    TransitionRefused,
    effective_status,
    transition,
)
from license_server.licensing.models import Status
from license_server.licensing.specs import LicenseSpec
from tests import store_helpers
from tests.conftest import PRODUCT

NOW = 1_800_000_000
FUTURE = NOW + 86_400
P, A, S, E, R = Status.PENDING, Status.ACTIVE, Status.SUSPENDED, Status.EXPIRED, Status.REVOKED

# (action, from status, has bindings, extra options) -> resulting status, or None if refused.
TABLE = [
    (Action.ACTIVATE, P, True, {}, A),
    (Action.SUSPEND, A, True, {}, S),
    (Action.SUSPEND, P, False, {}, S),
    (Action.UNSUSPEND, S, True, {}, A),
    (Action.UNSUSPEND, S, False, {}, P),
    (Action.EXPIRE, A, True, {}, E),
    (Action.EXPIRE, P, False, {}, E),
    (Action.EXPIRE, S, True, {}, E),
    (Action.RENEW, E, True, {"new_expiry": FUTURE}, A),
    (Action.RENEW, E, False, {"new_expiry": None}, P),
    (Action.RENEW, A, True, {"new_expiry": FUTURE}, A),
    (Action.RENEW, P, False, {"new_expiry": FUTURE}, P),
    (Action.REVOKE, A, True, {}, R),
    (Action.REVOKE, P, False, {}, R),
    (Action.REVOKE, S, True, {}, R),
    (Action.REVOKE, E, True, {}, R),
    (Action.REISSUE, A, True, {}, P),
    (Action.REISSUE, P, False, {}, P),
]
ALLOWED = {(action, status) for action, status, *_ in TABLE}
REFUSED = [
    (action, status) for action in Action for status in Status if (action, status) not in ALLOWED
]


@pytest.mark.parametrize(("action", "status", "bound", "options", "expected"), TABLE)
def test_allowed_transitions(action, status, bound, options, expected):
    state = LicenseState(status, None, 0, bound)
    assert transition(state, action, now=NOW, **options).status is expected


@pytest.mark.parametrize(("action", "status"), REFUSED)
def test_refused_transitions(action, status):
    with pytest.raises(TransitionRefused, match=f"cannot {action}"):
        transition(LicenseState(status, None, 0, True), action, now=NOW, new_expiry=FUTURE)


def test_revoked_is_terminal():
    assert all((action, R) in REFUSED for action in Action)


def test_reissue_frees_bindings_and_counts():
    change = transition(LicenseState(A, None, 2, True), Action.REISSUE, now=NOW)
    assert change.clear_bindings and change.reissue_count == 3


def test_reissue_limit():
    with pytest.raises(TransitionRefused, match="reissue limit"):
        transition(LicenseState(A, None, 3, True), Action.REISSUE, now=NOW, max_reissues=3)


def test_unsuspend_after_the_expiry_date_gives_expired():
    change = transition(LicenseState(S, NOW - 1, 0, True), Action.UNSUSPEND, now=NOW)
    assert change.status is E


def test_renew_needs_a_future_date():
    with pytest.raises(TransitionRefused, match="future"):
        transition(LicenseState(E, NOW - 5, 0, True), Action.RENEW, now=NOW, new_expiry=NOW)
    with pytest.raises(TransitionRefused, match="needs a new expiry"):
        transition(LicenseState(E, NOW - 5, 0, True), Action.RENEW, now=NOW)


def test_effective_status_expires_on_the_date():
    assert effective_status(A, NOW, NOW) is E
    assert effective_status(A, NOW + 1, NOW) is A
    assert effective_status(A, None, NOW) is A
    assert effective_status(S, NOW, NOW) is S  # a suspension says more than the date


async def test_service_applies_transitions_in_one_transaction(runtime):
    service = runtime.licenses
    await service.create_product(PRODUCT)
    license, _ = await service.issue(
        LicenseSpec(product="mymod", licensee="Ann", email="ann@example.org")
    )
    assert license.status is P
    async with runtime.db.write() as conn:
        await license_rows.upsert_binding(
            conn, license.id, kind="domain", value="a.com", raw_value="a.com", is_dev=False, now=1
        )
    suspended = await service.apply(license.id, Action.SUSPEND)
    assert suspended.status is S and suspended.revision == license.revision + 1
    active = await service.apply(license.id, Action.UNSUSPEND)
    assert active.status is A  # it has a binding
    reissued = await service.apply(license.id, Action.REISSUE)
    assert reissued.status is P and reissued.bindings == () and reissued.reissue_count == 1
    revoked = await service.apply(license.id, Action.REVOKE)
    with pytest.raises(TransitionRefused):
        await service.apply(license.id, Action.UNSUSPEND)
    assert (await service.license_by_id(license.id)).status is revoked.status is R


# --- the single write path (issue #11): every change is logged with it and announced --------


async def _change_rows(runtime) -> list[tuple]:
    async with runtime.db.read() as conn:
        rows = await conn.fetch_all("SELECT license_id, kind FROM license_changes ORDER BY seq")
    return [(row["license_id"], row["kind"]) for row in rows]


async def test_every_change_is_logged_in_its_transaction_and_announced(runtime):
    from license_server.licensing.actors import CLI, ActorKind
    from license_server.licensing.specs import ProductChanges

    service = runtime.licenses
    heard = []
    runtime.changes.subscribe(heard.append)
    await service.create_product(PRODUCT, actor=CLI)
    license, _ = await service.issue(
        LicenseSpec(product="mymod", licensee="Ann", email="ann@example.org"), actor=CLI
    )
    await service.apply(license.id, Action.SUSPEND, actor=CLI)
    await service.update_product("mymod", ProductChanges(seats=3), actor=CLI)
    expected = [(None, "product"), (license.id, "issue"), (license.id, "suspend")]
    expected.append((None, "product"))
    assert await _change_rows(runtime) == expected
    assert [(c.license_id, c.kind) for c in heard] == expected
    assert {c.actor.kind for c in heard} == {ActorKind.CLI}


async def test_a_refused_change_writes_and_announces_nothing(runtime):
    service = runtime.licenses
    await service.create_product(PRODUCT)
    license, _ = await service.issue(
        LicenseSpec(product="mymod", licensee="Ann", email="ann@example.org")
    )
    await service.apply(license.id, Action.REVOKE)
    before = await _change_rows(runtime)
    heard = []
    runtime.changes.subscribe(heard.append)
    with pytest.raises(TransitionRefused):
        await service.apply(license.id, Action.UNSUSPEND)
    assert await _change_rows(runtime) == before and heard == []


async def test_apply_returns_what_the_database_holds(runtime):
    service = runtime.licenses
    await service.create_product(PRODUCT)
    license, _ = await service.issue(
        LicenseSpec(product="mymod", licensee="Ann", email="ann@example.org")
    )
    async with runtime.db.write() as conn:
        await license_rows.upsert_binding(
            conn, license.id, kind="domain", value="a.com", raw_value="a.com", is_dev=False, now=1
        )
    for action in (Action.SUSPEND, Action.UNSUSPEND, Action.REISSUE, Action.REVOKE):
        changed = await service.apply(license.id, action)
        assert changed == await service.license_by_id(license.id), action


async def test_a_duplicate_free_trial_is_suspended_through_the_lifecycle_rules(runtime):
    from license_server.licensing.actors import MODULE
    from license_server.licensing.decision import accepted
    from license_server.licensing.service import FirstUse, NewBinding
    from license_server.licensing.specs import ProductSpec

    service = runtime.licenses
    await service.create_product(ProductSpec(code="trial", name="Trial", free_trial=True))
    spec = LicenseSpec(product="trial", licensee="Ann", email="ann@example.org")
    (first, _), (second, _) = await service.issue(spec), await service.issue(spec)
    heard = []
    runtime.changes.subscribe(heard.append)

    async def bind_shop(fresh):
        return FirstUse(accepted("activated"), (NewBinding("domain", "shop.com", "shop.com"),))

    bound, verdict = await service.first_use(first.id, bind_shop, actor=MODULE)
    assert (bound.status, verdict.reason) == (Status.ACTIVE, "activated")
    suspended, verdict = await service.first_use(second.id, bind_shop, actor=MODULE)
    assert (suspended.status, verdict.reason) == (S, "trial_already_used")
    assert suspended == await service.license_by_id(second.id)
    assert [(c.license_id, c.kind) for c in heard] == [
        (first.id, "bind"),
        (first.id, "activate"),
        (second.id, "suspend"),
    ]
    assert {str(c.actor) for c in heard} == {"module"}


async def test_a_bulk_issue_is_a_few_statements_not_three_per_license(runtime, monkeypatch):
    """Up to 1,000 licenses in one transaction: ids drawn in one read, rows and rules each
    written in one batch (an id probe, an insert and the rules per license before)."""
    await runtime.licenses.create_product(PRODUCT)
    statements = store_helpers.CountedStatements(runtime.db, monkeypatch)
    spec = LicenseSpec(
        product=PRODUCT.code, licensee="Bulk Ltd", email="ops@bulk.example",
        domains=("*.bulk.example",),
    )  # fmt: skip
    issued = await runtime.licenses.issue_many(spec, 300)
    assert statements.count <= 12, statements.by_statement()
    assert len({license_id for license_id, _ in issued}) == 300
    # The audit rows of the batch, inserted together, still form one chain.
    checked, broken = await runtime.licenses.audit.verify(runtime.db)
    assert broken is None and checked >= 301  # an issue row each, and the bulk_issue row
    for license_id, key in issued[:5]:
        license = await runtime.licenses.license_by_key(key)
        assert license.id == license_id and license.rules_of("domain") == ("*.bulk.example",)

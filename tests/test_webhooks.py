"""Webhooks (issue #14): the outbox written with each change, signed deliveries to a real local
receiver, retries with backoff by an injected clock, pausing with an alert, resume and
redeliver, exactly-once delivery by two instances, verification.refused behind a cursor."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from license_server.crypto.signing import generate_key
from license_server.db import webhooks as webhook_rows
from license_server.licensing import webhook_events
from license_server.licensing.actors import SYSTEM, Actor, ActorKind
from license_server.licensing.alerts import AlertSignal, Severity
from license_server.licensing.changes import Change, ChangeKind
from license_server.licensing.expiry import expire_lapsed
from license_server.licensing.lifecycle import Action
from license_server.runtime import open_runtime
from license_server.staff.webhooks import EndpointSpec, WebhookEndpoints
from license_server.webhooks.delivery import LEASE_MARGIN_MS, Deliverer, backoff_ms
from license_server.webhooks.signing import load_webhook_key, public_key_text
from tests import store_helpers
from tests.conftest import with_sections
from tests.test_change_feed import check
from tests.verify_helpers import issue, product
from tests.webhook_receiver import verify

ALL = (
    "license.created", "license.suspended", "license.unsuspended", "license.revoked",
    "license.reissued", "license.expired", "domain.bound", "domain.released",
    "verification.refused", "alert.raised",
)  # fmt: skip
STAFF = Actor(ActorKind.STAFF, "1")


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hook_settings(settings):
    return with_sections(
        settings, webhooks={"allow_private_targets": True, "allow_http": True,
                            "pause_after_failures": 3, "max_attempts": 5}
    )  # fmt: skip


@pytest.fixture
async def hooks(hook_settings):
    """A runtime, its endpoints service, a deliverer with a settable clock and rand = 0.5."""
    clock = Clock()
    async with open_runtime(hook_settings) as rt:
        rt.licenses.clock = clock
        key = load_webhook_key(hook_settings.keys_dir)
        deliverer = Deliverer(rt.db, hook_settings.webhooks, key, alerts=rt.alerts,
                              clock=clock, rand=lambda: 0.5)  # fmt: skip
        endpoints = WebhookEndpoints(rt.licenses, hook_settings.webhooks, deliverer.wake)
        await product(rt)
        try:
            yield rt, endpoints, deliverer, clock
        finally:
            await deliverer.close()


async def subscribe(endpoints, url, events=ALL, **options):
    return await endpoints.create(STAFF, EndpointSpec(url=url, events=events, **options))


async def rows(rt, sql, params=()):
    async with rt.db.read() as conn:
        return await conn.fetch_all(sql, params)


# -- signing and the payload ----------------------------------------------------------------


async def test_a_change_is_delivered_signed_with_the_published_key(hooks, receiver, hook_settings):
    rt, endpoints, deliverer, _ = hooks
    await subscribe(endpoints, receiver.url)
    license, key = await issue(rt, domains=("shop.example",))
    assert await deliverer.drain() == 1
    [got] = receiver.received
    public = public_key_text(load_webhook_key(hook_settings.keys_dir))
    assert verify(public, got)
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["webhook-timestamp"] == str(int(deliverer.clock()))
    assert got.headers["content-type"] == "application/json"
    event = got.event
    assert event["type"] == "license.created"
    assert event["data"]["license_id"] == license.id
    assert event["data"]["product"] == "mymod"
    assert event["data"]["status"] == "pending"
    # Never the key, the licensee's e-mail or name.
    for secret in (key, "ops@smith.example", "Smith"):
        assert secret not in got.body.decode()
    # A tampered body or another key fails the check (the test's verify is real).
    tampered = type(got)(got.headers, got.body.replace(b"pending", b"active"))
    assert not verify(public, tampered)
    other, _ = generate_key(1)
    assert not verify(public_key_text(other), got)


async def test_the_webhook_key_is_its_own_owner_only_file(hook_settings):
    key = load_webhook_key(hook_settings.keys_dir)
    files = list((hook_settings.keys_dir / "webhooks").glob("*.pem"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert load_webhook_key(hook_settings.keys_dir).kid == key.kid  # made once


async def test_each_change_maps_to_its_event(hooks, receiver):
    rt, endpoints, deliverer, _clock = hooks
    await subscribe(endpoints, receiver.url)
    license, key = await issue(rt, expires=dt.date(2030, 6, 1))
    assert (await check(rt, key, "shop.example"))[0] == "active"
    await rt.licenses.release_binding(license.id, "domain", "shop.example")
    for action in (Action.SUSPEND, Action.UNSUSPEND, Action.REISSUE, Action.REVOKE):
        await rt.licenses.apply(license.id, action, actor=STAFF)
    await deliverer.drain()
    types = [r.event["type"] for r in receiver.received]
    assert types == ["license.created", "domain.bound", "domain.released", "license.suspended",
                     "license.unsuspended", "license.reissued", "license.revoked"]  # fmt: skip
    bound = receiver.of_type("domain.bound")[0].event["data"]
    assert bound["domain"] == "shop.example" and bound["domains"] == ["shop.example"]
    assert bound["actor"] == "module"
    assert receiver.of_type("license.revoked")[0].event["data"]["status"] == "revoked"
    assert receiver.of_type("license.suspended")[0].event["data"]["actor"] == "staff:1"


async def test_license_expired_fires_once_per_expiry(hooks, receiver):
    rt, endpoints, deliverer, clock = hooks
    await subscribe(endpoints, receiver.url, events=("license.expired",))
    license, _ = await issue(rt, expires=dt.date(2030, 6, 1))
    assert await expire_lapsed(rt.licenses) == 0
    clock.now = dt.datetime(2030, 6, 2, tzinfo=dt.UTC).timestamp()
    assert await expire_lapsed(rt.licenses) == 1
    assert await expire_lapsed(rt.licenses) == 0  # already expired: nothing again
    await deliverer.drain()
    [got] = receiver.received
    assert got.event["data"]["status"] == "expired"
    assert (await rt.licenses.license_by_id(license.id)).status.value == "expired"


async def test_a_renewal_that_came_first_is_not_expired(hooks):
    rt, _endpoints, _deliverer, clock = hooks
    license, _ = await issue(rt, expires=dt.date(2030, 6, 1))
    clock.now = dt.datetime(2030, 6, 2, tzinfo=dt.UTC).timestamp()
    await rt.licenses.renew(license.id, int(clock.now) + 86400)
    assert not await rt.licenses.expire_if_lapsed(license.id)


async def test_no_subscriber_means_nothing_is_written(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    await issue(rt)
    await subscribe(endpoints, receiver.url, events=("license.revoked",))
    await subscribe(endpoints, receiver.url, events=ALL, enabled=False)
    await issue(rt)
    assert await rows(rt, "SELECT * FROM webhook_events") == []
    assert await deliverer.drain() == 0


async def test_an_event_commits_with_its_change_or_not_at_all(hooks, receiver):
    rt, endpoints, _deliverer, _ = hooks
    await subscribe(endpoints, receiver.url)
    license, _ = await issue(rt)

    async def work(writes):
        await rt.licenses._transition(writes, await rt.licenses.load(writes.conn, license.id),
                                      Action.SUSPEND)  # fmt: skip
        raise RuntimeError("after the change, before the commit")

    with pytest.raises(RuntimeError):
        await rt.licenses.write(SYSTEM, work)
    events = await rows(rt, "SELECT type FROM webhook_events")
    assert [e["type"] for e in events] == ["license.created"]


async def test_fan_out_to_every_subscribed_endpoint(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    first = await subscribe(endpoints, receiver.url)
    second = await subscribe(endpoints, receiver.url + "?second", events=("license.created",))
    await subscribe(endpoints, receiver.url + "?third", events=("license.revoked",))
    await issue(rt)
    deliveries = await rows(rt, "SELECT endpoint_id FROM webhook_deliveries ORDER BY id")
    assert [d["endpoint_id"] for d in deliveries] == [first.id, second.id]
    await deliverer.drain()
    assert len({r.id for r in receiver.received}) == 1 and len(receiver.received) == 2


async def test_alert_raised_is_enqueued_with_a_new_alert_only(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    await subscribe(endpoints, receiver.url, events=("alert.raised",))
    signal = AlertSignal("key_sharing", "license:1", Severity.MEDIUM, "Shared key", {"n": 3})
    await rt.alerts.raise_(signal)
    await rt.alerts.raise_(signal)  # bumps the open alert: no new event
    await deliverer.drain()
    [got] = receiver.received
    assert got.event["data"]["detector"] == "key_sharing"
    assert got.event["data"]["severity"] == "medium"


# -- retries, pausing, resume -------------------------------------------------------------


async def test_a_500_is_retried_after_the_backoff_then_delivered(hooks, receiver):
    rt, endpoints, deliverer, clock = hooks
    endpoint = await subscribe(endpoints, receiver.url)
    receiver.answers.extend([500])
    await issue(rt)
    assert await deliverer.step() == 1
    [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
    assert delivery["state"] == "pending" and delivery["attempts"] == 1
    wait = backoff_ms(1, deliverer.settings, lambda: 0.5)
    assert delivery["next_attempt_ms"] == deliverer.now_ms() + wait
    assert await deliverer.step() == 0  # not due yet: no sleep, nothing sent
    clock.now += wait / 1000
    assert await deliverer.step() == 1
    [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
    assert delivery["state"] == "delivered" and delivery["last_status"] == 200
    page = await endpoints.deliveries(endpoint.id)
    assert [a["status"] for a in page.deliveries[0]["attempts_log"]] == [500, 200]
    assert receiver.received[0].id == receiver.received[1].id  # the same webhook-id
    assert (await endpoints.get(endpoint.id)).consecutive_failures == 0


def test_backoff_is_exponential_with_full_jitter_and_capped(settings):
    hooks = with_sections(settings, webhooks={"retry_base_seconds": 2, "retry_cap_seconds": 60})
    top = [backoff_ms(n, hooks.webhooks, lambda: 0.999999) for n in range(1, 9)]
    assert top[:5] == [1999, 3999, 7999, 15999, 31999] and top[5:] == [59999] * 3
    assert backoff_ms(3, hooks.webhooks, lambda: 0.0) == 0


async def test_an_endpoint_is_paused_after_the_limit_with_an_alert_then_resumed(hooks, receiver):
    rt, endpoints, deliverer, clock = hooks
    endpoint = await subscribe(endpoints, receiver.url)
    receiver.answers.extend([503] * 3)
    for _ in range(3):
        await issue(rt)
    assert await deliverer.step() == 3
    paused = await endpoints.get(endpoint.id)
    assert paused.paused and paused.consecutive_failures == 3
    assert "503" in paused.paused_reason
    [alert] = await rows(rt, "SELECT * FROM alerts WHERE detector = 'webhook_failing'")
    assert alert["subject"] == f"endpoint:{endpoint.id}" and alert["severity"] == "high"
    # Held while paused: new events wait, due ones too.
    await issue(rt)
    clock.now += 7200
    assert await deliverer.step() == 0
    assert len(receiver.received) == 3
    _, due = await endpoints.resume(STAFF, endpoint.id)
    assert due == 5  # three failed, the new license.created, and the alert.raised event
    assert await deliverer.drain() == 5
    states = await rows(rt, "SELECT state FROM webhook_deliveries")
    assert {row["state"] for row in states} == {"delivered"}
    assert not (await endpoints.get(endpoint.id)).paused
    audit = await rows(rt, "SELECT action FROM audit_log WHERE target = ?",
                       (f"webhook:{endpoint.id}",))  # fmt: skip
    assert [row["action"] for row in audit] == ["webhook.create", "webhook.resume"]


async def test_a_success_in_the_batch_that_paused_an_endpoint_keeps_its_count(hooks, receiver):
    """The pausing failures and a later success in one batch: still paused, and the page still
    says how many failed in a row (a success resets the count only while not paused)."""
    rt, endpoints, deliverer, _ = hooks
    endpoint = await subscribe(endpoints, receiver.url, events=("license.created",))
    receiver.answers.extend([503, 503, 503, 200])
    for _ in range(4):
        await issue(rt)
    assert await deliverer.step() == 4
    paused = await endpoints.get(endpoint.id)
    assert paused.paused and paused.consecutive_failures == 3
    await endpoints.resume(STAFF, endpoint.id)
    assert (await endpoints.get(endpoint.id)).consecutive_failures == 0


async def test_a_delivery_fails_after_max_attempts_and_can_be_redelivered(hooks, receiver):
    rt, endpoints, deliverer, clock = hooks
    patient = Deliverer(
        rt.db, deliverer.settings.model_copy(update={"pause_after_failures": 100}),
        deliverer.key, clock=clock, rand=lambda: 0.5,
    )  # fmt: skip
    endpoint = await subscribe(endpoints, receiver.url, events=("license.created",))
    receiver.answers.extend([404] * 5)
    await issue(rt)
    try:
        for _ in range(5):
            clock.now += 7200
            await patient.step()
        [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
        assert delivery["state"] == "failed" and delivery["attempts"] == 5
        assert delivery["last_status"] == 404 and delivery["last_error"] == "HTTP 404"
        clock.now += 7200
        assert await patient.step() == 0
        assert not (await endpoints.get(endpoint.id)).paused
        await endpoints.redeliver(STAFF, endpoint.id, delivery["id"])
        assert await patient.drain() == 1
    finally:
        await patient.close()
    [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
    assert delivery["state"] == "delivered"


async def test_a_redirect_is_not_followed(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    await subscribe(endpoints, receiver.url.replace("/hook", "/redirect"))
    await issue(rt)
    await deliverer.step()
    [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
    assert delivery["last_status"] == 302 and delivery["state"] == "pending"
    assert len(receiver.received) == 1  # the redirect itself, never its target


async def test_an_unreachable_receiver_is_an_error_not_a_crash(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    url = receiver.url
    await receiver.stop()
    await subscribe(endpoints, url)
    await issue(rt)
    assert await deliverer.step() == 1
    [attempt] = await rows(rt, "SELECT * FROM webhook_delivery_attempts")
    assert attempt["status"] is None and "Connect" in attempt["error"]


# -- several instances ---------------------------------------------------------------------


async def test_two_instances_deliver_each_event_exactly_once(hook_settings, receiver):
    settings = with_sections(
        hook_settings,
        webhooks={**hook_settings.webhooks.model_dump(), "batch_size": 4},
    )
    key = load_webhook_key(settings.keys_dir)
    async with open_runtime(settings) as one, open_runtime(settings) as two:
        await product(one)
        await subscribe(WebhookEndpoints(one.licenses, settings.webhooks), receiver.url)
        for _ in range(30):
            await issue(one)
        a = Deliverer(one.db, settings.webhooks, key, instance="a")
        b = Deliverer(two.db, settings.webhooks, key, instance="b")
        try:
            sent = await asyncio.gather(a.drain(), b.drain())
        finally:
            await a.close()
            await b.close()
    ids = [r.id for r in receiver.received]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert sum(sent) == 30


async def test_a_delivery_claimed_by_a_process_that_died_is_sent_once_its_lease_runs_out(
    hooks, receiver
):
    """At least once: a process killed between claiming a delivery and recording its outcome
    leaves a lease; no other instance (nor the same server restarted) sends it before the
    lease runs out, and then it is sent, with the same webhook-id (receivers drop repeats)."""
    rt, endpoints, deliverer, clock = hooks
    await subscribe(endpoints, receiver.url)
    await issue(rt)
    now = deliverer.now_ms()
    lease = now + int(deliverer.settings.timeout_seconds * 1000) + LEASE_MARGIN_MS

    async def claim(conn):  # what a step does first; the process then "dies"
        return await webhook_rows.claim_due(
            conn, now_ms=now, lease_until_ms=lease, instance="died", limit=10
        )

    [claimed] = await rt.db.transaction(claim)
    assert await deliverer.step() == 0  # leased to the dead process: not sent again yet
    clock.now = (lease - 1) / 1000
    assert await deliverer.step() == 0
    clock.now = lease / 1000
    assert await deliverer.step() == 1
    [delivery] = await rows(rt, "SELECT * FROM webhook_deliveries")
    assert delivery["state"] == "delivered" and delivery["id"] == claimed["id"]
    assert [r.id for r in receiver.received] == [claimed["uid"]]


# -- verification.refused ---------------------------------------------------------------------


def _attempt(at_ms, license_id, result="suspended", reason="suspended", domain="x.example"):
    return (at_ms, "native", "203.0.113.9", "", domain, domain, "", license_id, None, "mymod",
            result, reason, "1.0", "ua", 100)  # fmt: skip


async def test_refusals_are_read_behind_a_cursor_and_a_storm_is_bounded(hooks, receiver):
    rt, endpoints, deliverer, _ = hooks
    minute = 1_900_000_020_000
    await rt.db.attempts.write([_attempt(minute, 1)], [])  # before any subscriber: not sent
    await deliverer.scan_refusals()
    await subscribe(endpoints, receiver.url, events=("verification.refused",))
    storm = [_attempt(minute + i, 1) for i in range(12)]
    storm += [_attempt(minute + 20, 2, "active", "ok")]  # accepted: not an event
    storm += [_attempt(minute + 30, None, "invalid", "unknown_key")]
    await rt.db.attempts.write(storm, [])
    await deliverer.drain()
    events = [r.event["data"] for r in receiver.received]
    assert [e["license_id"] for e in events] == [1] * 5 + [None]
    assert all(e["suppressed"] == 0 for e in events)
    await rt.db.attempts.write([_attempt(minute + 60_000, 1)], [])  # the next minute
    await deliverer.drain()
    last = receiver.received[-1].event["data"]
    assert last["license_id"] == 1 and last["suppressed"] == 7  # the 7 held back
    assert await deliverer.scan_refusals() == 0  # nothing new


async def test_a_round_of_refusals_is_written_in_a_few_statements(hooks, receiver, monkeypatch):
    """Refusals of many licenses at once (up to 1,000 a round) were two statements each in
    the round's write transaction; now the round's events are one write (per chunk)."""
    rt, endpoints, deliverer, _ = hooks
    await subscribe(endpoints, receiver.url, events=("verification.refused",))
    await deliverer.scan_refusals()  # the cursor starts here
    minute = 1_900_000_020_000
    await rt.db.attempts.write([_attempt(minute + n, 1000 + n) for n in range(300)], [])
    statements = store_helpers.CountedStatements(rt.db, monkeypatch)
    assert await deliverer.scan_refusals() == 300
    # The cursor, the newest id, the subscribers, the rows, the events, the cursor's move.
    assert statements.count <= 10, statements.by_statement()
    events = await rows(rt, "SELECT payload FROM webhook_events ORDER BY id")
    refused = [json.loads(row["payload"])["data"]["license_id"] for row in events]
    assert refused == [1000 + n for n in range(300)]


async def test_refusals_with_no_subscriber_only_move_the_cursor(hooks):
    rt, _endpoints, deliverer, _ = hooks
    await rt.db.attempts.write([_attempt(1_900_000_000_000, 1) for _ in range(3)], [])
    assert await deliverer.scan_refusals() == 0
    [cursor] = await rows(rt, "SELECT * FROM webhook_cursor")
    newest = (await rows(rt, "SELECT MAX(id) AS m FROM verification_attempts"))[0]["m"]
    assert cursor["attempt_id"] == newest
    assert await rows(rt, "SELECT * FROM webhook_events") == []


# -- retention -------------------------------------------------------------------------------


async def test_delivered_rows_are_pruned_after_the_retention(hooks, receiver):
    rt, endpoints, deliverer, clock = hooks
    await subscribe(endpoints, receiver.url)
    receiver.answers.extend([500])
    await issue(rt)
    await issue(rt)
    await deliverer.step()  # one delivered, one waiting for its retry
    clock.now += 31 * 86400
    assert await deliverer.prune() == 1
    left = await rows(rt, "SELECT state FROM webhook_deliveries")
    assert [row["state"] for row in left] == ["pending"]
    assert len(await rows(rt, "SELECT * FROM webhook_events")) == 1
    assert len(await rows(rt, "SELECT * FROM webhook_delivery_attempts")) == 1


async def test_change_kinds_without_an_event_write_nothing(hooks, receiver):
    rt, endpoints, _deliverer, _ = hooks
    await subscribe(endpoints, receiver.url)
    license, _ = await issue(rt)
    await rt.licenses.reset_reissues(license.id)
    await rt.bans.ban("domain", "pirate.example")
    kinds = [row["type"] for row in await rows(rt, "SELECT type FROM webhook_events")]
    assert kinds == ["license.created"]
    assert ChangeKind.BAN not in json.dumps(kinds)


async def test_rows_written_for_the_outbox_are_readable_by_the_db_layer(hooks, receiver):
    rt, endpoints, _deliverer, _ = hooks
    endpoint = await subscribe(endpoints, receiver.url)
    await issue(rt)
    async with rt.db.read() as conn:
        assert await webhook_rows.delivery_counts(conn, endpoint.id) == {"pending": 1}


async def test_a_private_target_is_refused_at_delivery_when_not_allowed(hooks, receiver):
    """The SSRF rule is applied again at every delivery (the setting may have changed)."""
    rt, endpoints, deliverer, clock = hooks
    await subscribe(endpoints, receiver.url)
    strict = Deliverer(
        rt.db, deliverer.settings.model_copy(update={"allow_private_targets": False}),
        deliverer.key, clock=clock, rand=lambda: 0.5,
    )  # fmt: skip
    await issue(rt)
    try:
        assert await strict.step() == 1
    finally:
        await strict.close()
    [attempt] = await rows(rt, "SELECT * FROM webhook_delivery_attempts")
    assert attempt["status"] is None and attempt["error"].startswith("refused:")
    assert receiver.received == []


async def test_many_changes_in_one_write_are_announced_in_a_few_statements(
    hooks, receiver, monkeypatch
):
    """An import's batch (500 licenses in one transaction) announced each change with ~4
    statements (the license, its domains, the event, its deliveries) inside the write lock;
    now the facts of all of them are one read and the events one write (per chunk)."""
    rt, endpoints, _deliverer, _ = hooks
    issued = [(await issue(rt))[0] for _ in range(120)]
    license_0, key_0 = await issue(rt)
    assert (await check(rt, key_0, "shop.example"))[0] == "active"  # binds its domain
    await subscribe(endpoints, receiver.url, events=("license.suspended", "domain.bound"))
    monkeypatch.setattr(webhook_rows, "FACTS_PER_STATEMENT", 50)  # chunks are exercised too
    monkeypatch.setattr(webhook_events, "EVENTS_PER_STATEMENT", 50)
    statements = store_helpers.CountedStatements(rt.db, monkeypatch)
    changes = [(Change(ChangeKind.SUSPEND, license.id), None) for license in issued]
    changes.append((Change(ChangeKind.BIND, license_0.id), {"domains": ["shop.example"]}))
    changes.append((Change(ChangeKind.REVOKE, license_0.id), None))  # nobody subscribes
    async with rt.db.write() as conn:
        written = await webhook_events.emit_changes(conn, changes, 1_900_000_000)
    # The subscribers, 3 chunks of facts (2 each), 3 chunks of events (2 each).
    assert written == 121
    assert statements.count <= 13, statements.by_statement()
    payloads = await rows(rt, "SELECT payload FROM webhook_events")
    events = [json.loads(row["payload"]) for row in payloads]
    suspended = [e["data"] for e in events if e["type"] == "license.suspended"]
    assert sorted(d["license_id"] for d in suspended) == sorted(lic.id for lic in issued)
    assert {(d["status"], d["product"], tuple(d["domains"])) for d in suspended} == {
        ("pending", "mymod", ())
    }
    [bound] = [e["data"] for e in events if e["type"] == "domain.bound"]
    assert (bound["license_id"], bound["domain"], bound["domains"], bound["status"]) == (
        license_0.id, "shop.example", ["shop.example"], "active",
    )  # fmt: skip

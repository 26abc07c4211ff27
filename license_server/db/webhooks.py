"""Queries on the webhook tables (migration 17): endpoints, the outbox, deliveries, attempts.

Times are Unix milliseconds (`*_ms`). A delivery is claimed by one instance at a time: one
UPDATE sets its lease (`leased_until_ms`, `leased_by`) only where the lease has run out; on
PostgreSQL the candidate rows are read `FOR UPDATE SKIP LOCKED`, so two instances claiming at
once take different rows instead of waiting for each other; on SQLite the write transaction
holds the database's only write lock, which serialises the claims. A result is written only
while the lease is still the writer's (`leased_by`), so an instance that lost its lease (it
stalled for longer than the lease) cannot overwrite what the new holder recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from license_server.db.connection import Connection, Row

# Results in the attempt log that are refusals of a license check (verification.refused).
REFUSED_RESULTS = ("invalid", "expired", "suspended", "revoked")


# -- endpoints ------------------------------------------------------------------------------


async def insert_endpoint(
    conn: Connection,
    *,
    url: str,
    description: str,
    events: str,
    enabled: bool,
    created_by: str,
    now_ms: int,
) -> int:
    return int(
        await conn.fetch_value(
            "INSERT INTO webhook_endpoints (url, description, events, enabled, created_by,"
            " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (url, description, events, enabled, created_by, now_ms, now_ms),
        )
    )


async def update_endpoint(
    conn: Connection,
    endpoint_id: int,
    *,
    url: str,
    description: str,
    events: str,
    enabled: bool,
    now_ms: int,
) -> int:
    return await conn.execute(
        "UPDATE webhook_endpoints SET url = ?, description = ?, events = ?, enabled = ?,"
        " updated_ms = ? WHERE id = ?",
        (url, description, events, enabled, now_ms, endpoint_id),
    )


async def delete_endpoint(conn: Connection, endpoint_id: int) -> int:
    return await conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))


async def endpoint_by_id(conn: Connection, endpoint_id: int, *, lock: bool = False) -> Row | None:
    return await conn.fetch_one(
        # ruff S608 / bandit B608: only the dialect's FOR UPDATE is appended.
        "SELECT * FROM webhook_endpoints WHERE id = ?" + (conn.for_update if lock else ""),  # noqa: S608 # nosec B608
        (endpoint_id,),
    )


async def all_endpoints(conn: Connection) -> list[Row]:
    return await conn.fetch_all("SELECT * FROM webhook_endpoints ORDER BY id")


async def subscriptions(conn: Connection) -> list[Row]:
    """id and events of every enabled endpoint (paused ones too: their deliveries wait)."""
    return await conn.fetch_all("SELECT id, events FROM webhook_endpoints WHERE enabled")


async def count_failure(conn: Connection, endpoint_id: int) -> Row | None:
    """One more failure in a row; the new count and whether the endpoint is paused."""
    return await conn.fetch_one(
        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1"
        " WHERE id = ? RETURNING consecutive_failures, paused_ms",
        (endpoint_id,),
    )


async def reset_failures(conn: Connection, endpoint_id: int) -> None:
    """A delivery succeeded: the failures in a row start again from 0, unless the endpoint is
    paused (a success sent in the batch that paused it must not erase why; resume resets)."""
    await conn.execute(
        "UPDATE webhook_endpoints SET consecutive_failures = 0"
        " WHERE id = ? AND consecutive_failures <> 0 AND paused_ms IS NULL",
        (endpoint_id,),
    )


async def pause(conn: Connection, endpoint_id: int, reason: str, now_ms: int) -> bool:
    changed = await conn.execute(
        "UPDATE webhook_endpoints SET paused_ms = ?, paused_reason = ?"
        " WHERE id = ? AND paused_ms IS NULL",
        (now_ms, reason, endpoint_id),
    )
    return changed > 0


async def resume(conn: Connection, endpoint_id: int, now_ms: int) -> int:
    """Unpause, reset the failure count, and make every failed or waiting delivery of the
    endpoint due now (attempts counted afresh); how many deliveries will be sent."""
    await conn.execute(
        "UPDATE webhook_endpoints SET paused_ms = NULL, paused_reason = '',"
        " consecutive_failures = 0, updated_ms = ? WHERE id = ?",
        (now_ms, endpoint_id),
    )
    return await conn.execute(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?,"
        " leased_until_ms = 0, leased_by = '' WHERE endpoint_id = ? AND state <> 'delivered'",
        (now_ms, endpoint_id),
    )


# -- the outbox -----------------------------------------------------------------------------


async def insert_events(
    conn: Connection, events: Sequence[tuple[str, str, str]], now_ms: int
) -> dict[str, int]:
    """Write (uid, type, payload) events in one statement; uid -> id (RETURNING's order is not
    the VALUES' order). At most a few hundred per call: 4 parameters each."""
    values = ", ".join("(?, ?, ?, ?)" for _ in events)
    rows = await conn.fetch_all(
        # ruff S608 / bandit B608: only placeholders are joined in.
        f"INSERT INTO webhook_events (uid, type, payload, created_ms) VALUES {values}"  # noqa: S608 # nosec B608
        " RETURNING id, uid",
        [value for uid, type_, payload in events for value in (uid, type_, payload, now_ms)],
    )
    return {row["uid"]: int(row["id"]) for row in rows}


async def insert_deliveries(
    conn: Connection, deliveries: Iterable[tuple[int, int]], now_ms: int
) -> None:
    """One delivery per (event id, endpoint id), due at once."""
    await conn.execute_many(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, next_attempt_ms, created_ms)"
        " VALUES (?, ?, ?, ?)",
        [(event_id, endpoint_id, now_ms, now_ms) for event_id, endpoint_id in deliveries],
    )


# -- claiming and recording -----------------------------------------------------------------


async def claim_due(
    conn: Connection, *, now_ms: int, lease_until_ms: int, instance: str, limit: int
) -> list[Row]:
    """Lease up to `limit` due deliveries of enabled, unpaused endpoints to `instance`; the
    claimed deliveries with their event and endpoint."""
    skip_locked = " FOR UPDATE OF d SKIP LOCKED" if conn.dialect == "postgresql" else ""
    rows = await conn.fetch_all(
        # ruff S608 / bandit B608: only the constant SKIP LOCKED clause is joined in.
        "UPDATE webhook_deliveries SET leased_until_ms = ?, leased_by = ?"  # noqa: S608 # nosec B608
        " WHERE id IN (SELECT d.id FROM webhook_deliveries d"
        " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " WHERE d.state = 'pending' AND d.next_attempt_ms <= ? AND d.leased_until_ms <= ?"
        " AND e.enabled AND e.paused_ms IS NULL"
        " ORDER BY d.next_attempt_ms, d.id LIMIT ?" + skip_locked + ")"
        " AND state = 'pending' AND leased_until_ms <= ? RETURNING id",
        (lease_until_ms, instance, now_ms, now_ms, limit, now_ms),
    )
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" for _ in ids)
    return await conn.fetch_all(
        # ruff S608 / bandit B608: only placeholders are joined in.
        "SELECT d.id, d.attempts, d.endpoint_id, e.url, v.uid, v.type, v.payload"  # noqa: S608 # nosec B608
        " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        f" JOIN webhook_events v ON v.id = d.event_id WHERE d.id IN ({marks}) ORDER BY d.id",
        ids,
    )


async def record_attempt(
    conn: Connection, delivery_id: int, *, at_ms: int, status: int | None, error: str,
    duration_ms: int,
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO webhook_delivery_attempts (delivery_id, at_ms, status, error, duration_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (delivery_id, at_ms, status, error, duration_ms),
    )


async def mark_delivered(
    conn: Connection, delivery_id: int, instance: str, status: int, now_ms: int
) -> bool:
    changed = await conn.execute(
        "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,"
        " last_status = ?, last_error = '', delivered_ms = ?, leased_until_ms = 0,"
        " leased_by = '' WHERE id = ? AND leased_by = ? AND state = 'pending'",
        (status, now_ms, delivery_id, instance),
    )
    return changed > 0


async def mark_failed_attempt(
    conn: Connection, delivery_id: int, instance: str, *, status: int | None, error: str,
    state: str, next_attempt_ms: int,
) -> bool:  # fmt: skip
    changed = await conn.execute(
        "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_status = ?,"
        " last_error = ?, next_attempt_ms = ?, leased_until_ms = 0, leased_by = ''"
        " WHERE id = ? AND leased_by = ? AND state = 'pending'",
        (state, status, error, next_attempt_ms, delivery_id, instance),
    )
    return changed > 0


async def redeliver(conn: Connection, delivery_id: int, endpoint_id: int, now_ms: int) -> bool:
    """Send one delivery again (whatever its state), as soon as its endpoint is not paused."""
    changed = await conn.execute(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?,"
        " leased_until_ms = 0, leased_by = '' WHERE id = ? AND endpoint_id = ?",
        (now_ms, delivery_id, endpoint_id),
    )
    return changed > 0


# -- reading the log ------------------------------------------------------------------------


async def deliveries_of(
    conn: Connection, endpoint_id: int, *, before_id: int | None, limit: int
) -> list[Row]:
    """An endpoint's deliveries, newest first, `limit` of them below `before_id` (keyset)."""
    return await conn.fetch_all(
        "SELECT d.id, d.state, d.attempts, d.next_attempt_ms, d.last_status, d.last_error,"
        " d.created_ms, d.delivered_ms, v.uid, v.type FROM webhook_deliveries d"
        " JOIN webhook_events v ON v.id = d.event_id"
        " WHERE d.endpoint_id = ? AND d.id < ? ORDER BY d.id DESC LIMIT ?",
        (endpoint_id, 2**63 - 1 if before_id is None else before_id, limit),
    )


async def attempts_of(conn: Connection, delivery_ids: Sequence[int]) -> list[Row]:
    if not delivery_ids:
        return []
    marks = ", ".join("?" for _ in delivery_ids)
    return await conn.fetch_all(
        # ruff S608 / bandit B608: only placeholders are joined in.
        "SELECT * FROM webhook_delivery_attempts"  # noqa: S608 # nosec B608
        f" WHERE delivery_id IN ({marks}) ORDER BY id",
        list(delivery_ids),
    )


async def delivery_counts(conn: Connection, endpoint_id: int) -> dict[str, int]:
    rows = await conn.fetch_all(
        "SELECT state, COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = ? GROUP BY state",
        (endpoint_id,),
    )
    return {row["state"]: int(row["n"]) for row in rows}


# -- verification.refused: the attempt log read behind a cursor -------------------------------


async def lock_cursor(conn: Connection) -> Row | None:
    return await conn.fetch_one(
        "SELECT * FROM webhook_cursor WHERE id = 1" + conn.for_update  # noqa: S608 # nosec B608
    )


async def create_cursor(conn: Connection) -> None:
    """The cursor at the newest attempt: refusals from before anyone subscribed are not sent."""
    newest = await conn.fetch_value("SELECT MAX(id) FROM verification_attempts")
    await conn.execute(
        "INSERT INTO webhook_cursor (id, attempt_id, state) VALUES (1, ?, '{}')"
        " ON CONFLICT (id) DO NOTHING",
        (int(newest or 0),),
    )


async def move_cursor(conn: Connection, attempt_id: int, state: str) -> None:
    await conn.execute(
        "UPDATE webhook_cursor SET attempt_id = ?, state = ? WHERE id = 1", (attempt_id, state)
    )


async def newest_attempt_id(conn: Connection) -> int:
    return int(await conn.fetch_value("SELECT MAX(id) FROM verification_attempts") or 0)


async def refusals_after(conn: Connection, after_id: int, up_to_id: int, limit: int) -> list[Row]:
    """Refused checks with after_id < id <= up_to_id, in id order, at most `limit`."""
    marks = ", ".join("?" for _ in REFUSED_RESULTS)
    return await conn.fetch_all(
        # ruff S608 / bandit B608: only placeholders are joined in.
        "SELECT id, at_ms, endpoint, domain, license_id, product, result, reason"  # noqa: S608 # nosec B608
        f" FROM verification_attempts WHERE id > ? AND id <= ? AND result IN ({marks})"
        " ORDER BY id LIMIT ?",
        (after_id, up_to_id, *REFUSED_RESULTS, limit),
    )


# -- retention ------------------------------------------------------------------------------


async def prune(conn: Connection, older_than_ms: int) -> int:
    """Delivered deliveries older than `older_than_ms` (their attempts go with them), then
    events left with no delivery; the number of deliveries deleted."""
    deleted = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND created_ms < ?",
        (older_than_ms,),
    )
    await conn.execute(
        "DELETE FROM webhook_events WHERE created_ms < ? AND NOT EXISTS"
        " (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        (older_than_ms,),
    )
    return deleted


# Licenses per statement of `license_facts`: an IN list of this many parameters.
FACTS_PER_STATEMENT = 500


async def license_facts(conn: Connection, license_ids: Sequence[int]) -> dict[int, Row]:
    """What a license event says about each license: status, expiry, product, bound domains
    (sorted). Two statements per `FACTS_PER_STATEMENT` licenses, not two per license: an
    import's batch of 500 licenses announces them inside its write transaction."""
    found: dict[int, Row] = {}
    ids = list(dict.fromkeys(license_ids))
    for start in range(0, len(ids), FACTS_PER_STATEMENT):
        chunk = ids[start : start + FACTS_PER_STATEMENT]
        marks = ", ".join("?" for _ in chunk)
        # ruff S608 / bandit B608: only placeholders are joined in.
        rows = await conn.fetch_all(
            "SELECT l.id, l.status, l.expires_at, p.code AS product FROM licenses l"  # noqa: S608 # nosec B608
            f" JOIN products p ON p.id = l.product_id WHERE l.id IN ({marks})",
            chunk,
        )
        for row in rows:
            license_id = int(row.pop("id"))
            found[license_id] = {**row, "domains": []}
        domains = await conn.fetch_all(
            "SELECT license_id, value FROM license_bindings"  # noqa: S608 # nosec B608
            f" WHERE license_id IN ({marks}) AND kind = 'domain' ORDER BY license_id, value",
            chunk,
        )
        for row in domains:
            found[int(row["license_id"])]["domains"].append(row["value"])
    return found

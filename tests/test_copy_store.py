"""copy-store (license_server/db/copy_store.py): SQLite -> PostgreSQL -> SQLite with real data.

Both directions run whatever `--store` says: the PostgreSQL side is a fresh database of the
session's cluster, the SQLite side temporary files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from license_server.db import attempts as attempt_sql
from license_server.db import copy_store as cs
from license_server.db import licenses as license_rows
from license_server.db import security_events as security_event_rows
from license_server.db import staff as staff_rows
from license_server.db.copy_store import TABLES, checksums, copy_store, normalise, open_store
from license_server.licensing.actors import Actor, ActorKind
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.store_helpers import table_names

HOUR_MS = 3_600_000


async def _fill(settings: Settings) -> dict[str, str]:
    """Data made through the service, touching every table and both engines' odd types
    (booleans, blobs, NULLs, non-ASCII text, a composite text key)."""
    keys: dict[str, str] = {}
    async with open_runtime(settings) as rt:
        await rt.licenses.create_product(
            ProductSpec(code="mymod", name="My Modül", seats=2, whmcs_secret="s3cret")
        )
        await rt.licenses.create_product(
            ProductSpec(code="trial", name="Trial", free_trial=True, allow_ip_conflict=True)
        )
        for n in range(5):
            license, key = await rt.licenses.issue(
                LicenseSpec(
                    product="mymod",
                    licensee=f"Smith & Sons {n} ✓",
                    email=f"ops{n}@smith.example",
                    domains=(f"shop{n}.example", "*.smith.example"),
                    ips=("203.0.113.0/24",),
                    expires=dt.date(2099, 12, 31) if n % 2 else None,
                )
            )
            keys[f"license{n}"] = key
            if n == 1:
                await rt.licenses.apply(license.id, Action.SUSPEND)
            async with rt.db.write() as conn:
                await license_rows.upsert_binding(
                    conn, license.id, kind="domain", value=f"shop{n}.example",
                    raw_value=f"https://Shop{n}.example/", is_dev=False, now=1_800_000_000,
                )  # fmt: skip
                await license_rows.upsert_binding(
                    conn, license.id, kind="domain", value="localhost",
                    raw_value="localhost", is_dev=True, now=1_800_000_001,
                )  # fmt: skip
        await rt.bans.ban("domain", "pirate.example", "resold")
        await rt.bans.ban("ip", "198.51.100.0/24")
        license = await rt.licenses.license_by_key(keys["license0"])
        rows = []
        for i in range(40):
            rows.append(
                (
                    1_700_000_000_000 + (i % 4) * HOUR_MS + i,  # four hours of attempts
                    "verify" if i % 3 else "whmcs",
                    f"192.0.2.{i}",
                    "",
                    f"Shop{i}.example",
                    f"shop{i}.example",
                    "/home/ü",
                    license.id if i % 2 else None,
                    None if i % 2 else bytes([i]) * 32,
                    "mymod" if i % 2 else "",
                    "active" if i % 5 else "invalid",
                    # Mixed case: ordered by code point on both engines, whatever collation.
                    ("ok", "Zeta", "alpha", "Äpfel")[i % 4],
                    "1.0",
                    "curl/8 ✓",
                    100 + i,
                )
            )
        await rt.db.attempts.write(rows, [(license.id, 1_800_000_000)])
        # Fold the first two hours into hourly counts (composite, text-keyed rollups).
        async with rt.db.write() as conn:
            await attempt_sql.roll_up_before(conn, 1_700_000_000_000 + 2 * HOUR_MS)
            await attempt_sql.delete_before(conn, 1_700_000_000_000 + 2 * HOUR_MS)
        # The dashboard's hourly counts of the hours left (migration 11).
        from license_server.licensing.attempt_hours import fold_closed_hours

        await fold_closed_hours(rt.db, 1_700_000_000 + 10 * HOUR_MS // 1000)
        # The staff tables (issue #12): an account with a session, codes, a link, an audit row.
        async with rt.db.write() as conn:
            staff_id = await staff_rows.insert_account(
                conn, email="ann@example.org", name="Ann", role="admin",
                password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", now=1_800_000_000,
            )  # fmt: skip
            await staff_rows.set_totp(conn, staff_id, b"\x01encrypted\xfe", 1_800_000_001)
            await staff_rows.insert_session(
                conn, session_key=b"\x02" * 32, account_id=staff_id, csrf_token="csrf",
                mfa_passed=True, now=1_800_000_002, source_ip="192.0.2.0/24",
            )  # fmt: skip
            await staff_rows.replace_recovery_codes(conn, staff_id, [b"\x03" * 32, b"\x04" * 32])
            (first, _), _ = await staff_rows.unused_recovery_codes(conn, staff_id)
            await staff_rows.use_recovery_code(conn, first, 1_800_000_003)
            await staff_rows.insert_setup_link(conn, b"\x05" * 32, "admin", 1, 3601)
            await rt.licenses.audit.append(
                conn, at=1_800_000_004, actor=Actor(ActorKind.STAFF, str(staff_id)),
                action="license.suspend", target="license:1", detail={"why": "caf\u00e9"},
            )  # fmt: skip
            await security_event_rows.insert_event(
                conn, at=1_800_000_005, kind="sign_in_failed", account_id=None, email="",
                email_hash=b"\x06" * 32, source_ip="192.0.2.7", user_agent="caf\u00e9/1.0",
                detail='{"reason": "unknown_account"}',
            )  # fmt: skip
        # The vendor API's tables (issue #13): a key and an idempotency record with its answer.
        from license_server.db import api_keys as api_key_rows

        async with rt.db.write() as conn:
            key_id = await api_key_rows.insert_api_key(
                conn, prefix="lsk_live_0123456789ab", secret_hash=b"\x06" * 32, name="Billing ✓",
                scopes='["license:*"]', created_by="staff:1", created_at=1_800_000_005,
                expires_at=None,
            )  # fmt: skip
            row_id = await api_key_rows.claim_idempotency_key(
                conn, key_id, "order-1", b"\x07" * 32, 1_800_000_006
            )
            await api_key_rows.store_idempotent_answer(conn, row_id, 201, "{}", b'{"id":1}')
            # Access-token families and refresh tokens (migration 14): one spent, one live.
            from license_server.db import api_tokens as token_rows

            family = await token_rows.insert_family(conn, key_id, 1_800_000_007)
            spent = await token_rows.insert_refresh_token(
                conn, family, b"\x08" * 32, 1_800_000_007, 1_800_604_807
            )
            await token_rows.spend_refresh_token(conn, spent, 1_800_000_008)
            await token_rows.insert_refresh_token(
                conn, family, b"\x09" * 32, 1_800_000_008, 1_800_604_808
            )
            # Alerts (migration 15): one raised twice (bumped), with non-ASCII evidence.
            from license_server.licensing.alerts import AlertSignal, Severity, raise_alert

            for at in (1_800_000_009_000, 1_800_000_010_000):
                await raise_alert(
                    conn,
                    AlertSignal("key_sharing", "license:1", Severity.HIGH, "Shared ✓",
                                {"domains": ["a.example", "ü.example"]}, license_id=1),
                    at,
                )  # fmt: skip
            # The customer page (migration 16): a session and a confirmation link, one spent.
            from license_server.db import portal as portal_rows

            await portal_rows.insert_session(
                conn, b"\x0a" * 32, license.id, "lkh-\u00fc", 1_800_000_011
            )
            await portal_rows.insert_confirmation(
                conn,
                b"\x0b" * 32,
                license.id,
                "release",
                "shop1.example",
                1_800_000_012,
                1_800_001_812,
            )
            await portal_rows.insert_confirmation(
                conn, b"\x0c" * 32, license.id, "reissue", "", 1_800_000_013, 1_800_001_813
            )
            await portal_rows.spend_confirmation(conn, b"\x0c" * 32, 1_800_000_014)
        # Webhooks (migration 17): an endpoint, an event with its delivery and an attempt,
        # and the verification.refused cursor with its storm counts.
        from license_server.db import webhooks as webhook_rows
        from license_server.staff.webhooks import EndpointSpec, WebhookEndpoints

        hooks = WebhookEndpoints(rt.licenses, rt.settings.webhooks)
        endpoint = await hooks.create(
            Actor(ActorKind.STAFF, "1"),
            EndpointSpec(url="https://hooks.example/in?x=1",
                         description="Billing ✓", events=("license.revoked",
                                                         "verification.refused")),
        )  # fmt: skip
        await rt.licenses.apply(license.id, Action.REVOKE)
        async with rt.db.write() as conn:
            [delivery] = await conn.fetch_all("SELECT id FROM webhook_deliveries")
            await webhook_rows.record_attempt(
                conn, delivery["id"], at_ms=1_800_000_011_000, status=None,
                error="ConnectionRefused ✓", duration_ms=3,
            )  # fmt: skip
            await webhook_rows.pause(conn, endpoint.id, "failing ✓", 1_800_000_012_000)
            await webhook_rows.create_cursor(conn)
            await webhook_rows.move_cursor(conn, 7, '{"held": {"1": 2}}')
    return keys


async def _sums(location):
    db = await open_store(location)
    try:
        return {name: (s.rows, s.hexdigest) for name, s in (await checksums(db)).items()}
    finally:
        await db.close()


def test_tables_cover_every_table_of_the_schema(database_url):
    async def names():
        db = await open_store(database_url)
        try:
            return set(await table_names(db))
        finally:
            await db.close()

    assert asyncio.run(names()) - cs.NOT_COPIED == {table.name for table in TABLES}


def test_normal_form_is_the_same_on_both_engines():
    assert normalise(True) == normalise(1)
    assert normalise(False) == normalise(0)
    assert normalise(b"\x00\xff") == normalise(memoryview(b"\x00\xff"))
    assert normalise(None) != normalise("None")
    assert normalise("1") != normalise(1)
    assert normalise(b"ab") != normalise("6162")


@pytest.mark.parametrize("batch", [cs.BATCH_ROWS, 3])
async def test_sqlite_to_postgresql_and_back(tmp_path, postgres_cluster, batch):
    keys_dir = tmp_path / "keys"
    source = tmp_path / "source.db"
    keys = await _fill(Settings(database=source, keys_dir=keys_dir))
    dsn = postgres_cluster.create_database()
    back = tmp_path / "back" / "copy.db"
    out: list[str] = []
    try:
        assert await copy_store(str(source), dsn, batch=batch, out=out.append) == 0, out
        assert await copy_store(dsn, str(back), batch=batch, out=out.append) == 0, out
        original, on_postgres, returned = (
            await _sums(source),
            await _sums(dsn),
            await _sums(back),
        )
        assert original == on_postgres == returned
        counts = {name: rows for name, (rows, _) in original.items()}
        assert all(counts.values()), counts  # every table had rows to copy
        assert counts["verification_attempts"] == 20 and counts["attempt_rollups"] > 4
        assert sum("ok" in line.split()[-1:] for line in out) == 2 * len(TABLES)

        for location in (dsn, back):
            async with open_runtime(Settings(database=location, keys_dir=keys_dir)) as rt:
                for name, key in keys.items():
                    license = await rt.licenses.license_by_key(key)
                    assert license.licensee_name.startswith("Smith & Sons")
                    assert any(binding.is_dev for binding in license.bindings), name
                # New rows take new ids (PostgreSQL: identity sequences were reset).
                product = await rt.licenses.create_product(ProductSpec(code="new", name="N"))
                assert product.id > 2
                _, key = await rt.licenses.issue(
                    LicenseSpec(product="new", licensee="B", email="b@example.org",
                                domains=("b.example",))
                )  # fmt: skip
                issued = await rt.licenses.license_by_key(key)
                assert list(issued.rules_of("domain")) == ["b.example"]
                await rt.bans.ban("domain", "another.example")
    finally:
        postgres_cluster.drop_database(postgres_cluster.database_of(dsn))


async def test_a_target_with_rows_is_refused_and_left_alone(tmp_path, database_url):
    source = tmp_path / "source.db"
    await _fill(Settings(database=source, keys_dir=tmp_path / "keys"))
    async with open_runtime(Settings(database=database_url, keys_dir=tmp_path / "keys")) as rt:
        await rt.bans.ban("domain", "only.example")
    before = await _sums(database_url)
    with pytest.raises(cs.TargetNotEmpty, match=r"already holds rows \(in bans, license_changes"):
        await copy_store(str(source), str(database_url), out=lambda line: None)
    assert await _sums(database_url) == before


async def test_a_copy_that_differs_fails_verification(tmp_path, database_url, monkeypatch):
    source = tmp_path / "source.db"
    await _fill(Settings(database=source, keys_dir=tmp_path / "keys"))
    plain = cs._converter

    def corrupting(dialect, column_type):
        convert = plain(dialect, column_type)
        # Blobs reversed: still unique and allowed by every constraint, but not the same.
        return lambda value: (
            bytes(value)[::-1] if isinstance(value, bytes | memoryview) else convert(value)
        )

    monkeypatch.setattr(cs, "_converter", corrupting)
    out: list[str] = []
    assert await copy_store(str(source), str(database_url), out=out.append) == 1
    assert any(line.startswith("products") and "MISMATCH" in line for line in out)
    assert out[-1].startswith("VERIFICATION FAILED")


async def test_checksums_page_a_composite_key_whole(tmp_path):
    """attempt_rollups is paged on its hour: a page never splits an hour, whatever the batch."""
    source = tmp_path / "source.db"
    await _fill(Settings(database=source, keys_dir=tmp_path / "keys"))
    db = await open_store(source)
    try:
        rollups = next(table for table in TABLES if table.name == "attempt_rollups")
        async with cs.snapshot(db) as conn:
            whole = [row async for page in cs.pages(conn, rollups, 10_000) for row in page]
            small = [row async for page in cs.pages(conn, rollups, 1) for row in page]
        assert whole == small
        keys = [tuple(row[column] for column in rollups.key) for row in whole]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
    finally:
        await db.close()


def test_table_report_says_which_side_differs():
    same = cs.Checksum()
    other = cs.Checksum()
    other.add([{"id": 1}])
    report = cs.TableReport("products", same, other)
    assert not report.matches
    assert "MISMATCH" in cs.format_report([report])[1]
    assert dataclasses.replace(report, target=cs.Checksum()).matches

"""Numbered schema migrations, applied in order at start-up.

The schema version is kept by the dialect (`PRAGMA user_version` on SQLite). Each migration
runs inside the caller's write transaction together with the version bump, so a failed
migration leaves the previous schema intact; re-running start-up applies nothing twice.
Statements use the dialect's DDL placeholders (`{pk}`, `{blob}`, ...) instead of SQLite types.
Tables for later features (attempt log, staff, sessions, API keys, audit log) arrive with their
own migrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from license_server.db import dialect


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "products, licenses, rules and bindings",
        (
            """CREATE TABLE IF NOT EXISTS products (
                id {pk},
                code TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                key_prefix TEXT NOT NULL UNIQUE,
                local_key_days {bigint} NOT NULL,
                grace_days {bigint} NOT NULL,
                seats {bigint} NOT NULL,
                dev_host_allowance {bigint} NOT NULL,
                features TEXT NOT NULL DEFAULT '[]',
                whmcs_secret {blob},
                created_at {bigint} NOT NULL,
                updated_at {bigint} NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS licenses (
                id {pk},
                product_id {bigint} NOT NULL REFERENCES products(id),
                key_hash {blob} NOT NULL UNIQUE,
                key_encrypted {blob} NOT NULL,
                key_kind TEXT NOT NULL CHECK (key_kind IN ('signed', 'legacy')),
                status TEXT NOT NULL
                    CHECK (status IN ('pending', 'active', 'suspended', 'expired', 'revoked')),
                licensee_name TEXT NOT NULL,
                licensee_company TEXT NOT NULL DEFAULT '',
                licensee_email TEXT NOT NULL,
                expires_at {bigint},
                seats {bigint},
                reissue_count {bigint} NOT NULL DEFAULT 0,
                notes TEXT NOT NULL DEFAULT '',
                revision {bigint} NOT NULL DEFAULT 1,
                created_at {bigint} NOT NULL,
                updated_at {bigint} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS licenses_product ON licenses (product_id)",
            """CREATE TABLE IF NOT EXISTS license_rules (
                id {pk},
                license_id {bigint} NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('domain', 'ip', 'directory')),
                value TEXT NOT NULL,
                UNIQUE (license_id, kind, value)
            )""",
            """CREATE TABLE IF NOT EXISTS license_bindings (
                id {pk},
                license_id {bigint} NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('domain', 'ip', 'directory')),
                value TEXT NOT NULL,
                raw_value TEXT NOT NULL,
                is_dev {bool} NOT NULL DEFAULT 0,
                created_at {bigint} NOT NULL,
                last_seen_at {bigint} NOT NULL,
                UNIQUE (license_id, kind, value)
            )""",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


async def migrate(conn: aiosqlite.Connection) -> list[int]:
    """Apply pending migrations inside the caller's transaction; return the versions applied."""
    current = await dialect.schema_version(conn)
    if current > LATEST:
        raise RuntimeError(
            f"database schema version {current} is newer than this server ({LATEST}); upgrade"
        )
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        for statement in migration.statements:
            await conn.execute(statement.format(**dialect.DDL_TYPES))
        await dialect.set_schema_version(conn, migration.version)
        applied.append(migration.version)
    return applied

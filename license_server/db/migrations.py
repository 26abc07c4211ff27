"""Numbered schema migrations, applied in order at start-up.

The same numbered migrations serve SQLite and PostgreSQL: statements use the connection's DDL
placeholders (`{pk}`, `{blob}`, `{bigint}`, `{bool}`, `{false}`) instead of one engine's types.
The schema version is kept by the connection (`PRAGMA user_version` on SQLite, a one-row table
on PostgreSQL), which also takes a lock, so instances starting together never race to migrate.
Each migration runs inside the caller's write transaction together with the version bump, so a
failed migration leaves the previous schema intact; re-running start-up applies nothing twice.
Tables for later features (attempt log, staff, sessions, API keys, audit log) arrive with their
own migrations.
"""

from __future__ import annotations

from dataclasses import dataclass

from license_server.db.connection import Connection


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
                is_dev {bool} NOT NULL DEFAULT {false},
                created_at {bigint} NOT NULL,
                last_seen_at {bigint} NOT NULL,
                UNIQUE (license_id, kind, value)
            )""",
        ),
    ),
    Migration(
        2,
        "verification attempt log and its hourly roll-up",
        (
            # Every attempt, accepted or not. Never the raw key: a license id when the key is
            # known, else a keyed hash of what was sent (to spot one unknown key retried).
            """CREATE TABLE IF NOT EXISTS verification_attempts (
                id {pk},
                at_ms {bigint} NOT NULL,
                endpoint TEXT NOT NULL,
                source_ip TEXT NOT NULL,
                reported_ip TEXT NOT NULL DEFAULT '',
                domain_raw TEXT NOT NULL DEFAULT '',
                domain TEXT NOT NULL DEFAULT '',
                directory TEXT NOT NULL DEFAULT '',
                license_id {bigint},
                key_hash {blob},
                product TEXT NOT NULL DEFAULT '',
                result TEXT NOT NULL,
                reason TEXT NOT NULL,
                client_version TEXT NOT NULL DEFAULT '',
                user_agent TEXT NOT NULL DEFAULT '',
                latency_us {bigint} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS attempts_at ON verification_attempts (at_ms)",
            "CREATE INDEX IF NOT EXISTS attempts_license "
            "ON verification_attempts (license_id, at_ms)",
            # Old attempts are folded into hourly counts; license_id 0 = no known license.
            """CREATE TABLE IF NOT EXISTS attempt_rollups (
                hour {bigint} NOT NULL,
                endpoint TEXT NOT NULL,
                license_id {bigint} NOT NULL,
                result TEXT NOT NULL,
                reason TEXT NOT NULL,
                attempts {bigint} NOT NULL,
                PRIMARY KEY (hour, endpoint, license_id, result, reason)
            )""",
        ),
    ),
    Migration(
        3,
        "WHMCS Licensing Addon compatibility: product options, WHMCS ids, bans",
        (
            # WHMCS "allow conflict" options: that binding is not checked for the product.
            "ALTER TABLE products ADD COLUMN allow_domain_conflict {bool} NOT NULL DEFAULT {false}",
            "ALTER TABLE products ADD COLUMN allow_ip_conflict {bool} NOT NULL DEFAULT {false}",
            "ALTER TABLE products ADD COLUMN allow_directory_conflict {bool} "
            "NOT NULL DEFAULT {false}",
            "ALTER TABLE products ADD COLUMN free_trial {bool} NOT NULL DEFAULT {false}",
            "ALTER TABLE products ADD COLUMN max_reissues {bigint}",
            "ALTER TABLE licenses ADD COLUMN whmcs_service_id {bigint}",
            "ALTER TABLE licenses ADD COLUMN billing_cycle TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE licenses ADD COLUMN last_access_at {bigint}",
            # Free-trial duplicate detection looks up who else holds a domain.
            "CREATE INDEX IF NOT EXISTS bindings_value ON license_bindings (kind, value)",
            """CREATE TABLE IF NOT EXISTS bans (
                id {pk},
                kind TEXT NOT NULL CHECK (kind IN ('domain', 'ip')),
                value TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                created_at {bigint} NOT NULL,
                UNIQUE (kind, value)
            )""",
        ),
    ),
    Migration(
        4,
        "licenses remember the signing key of their license key",
        (
            # Which key signed the license key (RFC 7638 kid), so that `retire` can tell whether
            # a key still has live licenses without decrypting every key. NULL for licenses
            # issued before this column (and legacy keys): their key hint is read instead.
            "ALTER TABLE licenses ADD COLUMN signing_kid TEXT",
            "CREATE INDEX IF NOT EXISTS licenses_signing_kid ON licenses (signing_kid)",
        ),
    ),
    Migration(
        5,
        "change log: which license (or product/ban, license_id NULL) changed, for every process",
        (
            # Written in the same transaction as each change; a verifying process reads the
            # newest seq before trusting its caches and drops what the newer rows name.
            # Pruned to a bounded number of rows on every write (db/changes.py).
            """CREATE TABLE IF NOT EXISTS license_changes (
                seq {pk},
                license_id {bigint},
                kind TEXT NOT NULL,
                at {bigint} NOT NULL
            )""",
        ),
    ),
    Migration(
        6,
        "staff accounts, their sessions and recovery codes, set-up links, the audit log",
        (
            # Emails are stored lower-case (one account per address). password_hash is a PHC
            # string (Argon2id); totp_secret is AES-GCM encrypted (crypto/fields.py), NULL
            # until the account has enrolled.
            """CREATE TABLE IF NOT EXISTS staff_accounts (
                id {pk},
                email TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                role TEXT NOT NULL
                    CHECK (role IN ('admin', 'license_manager', 'support', 'read_only')),
                password_hash TEXT NOT NULL,
                password_changed_at {bigint} NOT NULL,
                totp_secret {blob},
                totp_enrolled_at {bigint},
                disabled {bool} NOT NULL DEFAULT {false},
                last_login_at {bigint},
                created_at {bigint} NOT NULL,
                updated_at {bigint} NOT NULL
            )""",
            # Only a SHA-256 of a session id is stored: a copy of the table opens no session.
            """CREATE TABLE IF NOT EXISTS staff_sessions (
                id {pk},
                session_key {blob} NOT NULL UNIQUE,
                account_id {bigint} NOT NULL REFERENCES staff_accounts(id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                mfa_passed {bool} NOT NULL DEFAULT {false},
                created_at {bigint} NOT NULL,
                last_seen_at {bigint} NOT NULL,
                source_ip TEXT NOT NULL DEFAULT '',
                user_agent TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX IF NOT EXISTS staff_sessions_account ON staff_sessions (account_id)",
            """CREATE TABLE IF NOT EXISTS staff_recovery_codes (
                id {pk},
                account_id {bigint} NOT NULL REFERENCES staff_accounts(id) ON DELETE CASCADE,
                code_hash {blob} NOT NULL,
                used_at {bigint},
                UNIQUE (account_id, code_hash)
            )""",
            # The first administrator's one-time set-up link (and later invitations).
            """CREATE TABLE IF NOT EXISTS staff_setup_links (
                id {pk},
                token_hash {blob} NOT NULL UNIQUE,
                role TEXT NOT NULL,
                created_at {bigint} NOT NULL,
                expires_at {bigint} NOT NULL,
                used_at {bigint}
            )""",
            # Who did what, when, from where: every staff, API and CLI change (actor_kind and
            # actor_id as licensing/actors.py names them); detail is a JSON object.
            """CREATE TABLE IF NOT EXISTS audit_log (
                id {pk},
                at {bigint} NOT NULL,
                actor_kind TEXT NOT NULL,
                actor_id TEXT NOT NULL DEFAULT '',
                action TEXT NOT NULL,
                target TEXT NOT NULL DEFAULT '',
                detail TEXT NOT NULL DEFAULT '{{}}',
                source_ip TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at)",
        ),
    ),
    Migration(
        7,
        "the audit log is hash-chained",
        (
            # row_hash = keyed hash of (prev_hash, the row's fields); licensing/audit.py.
            "ALTER TABLE audit_log ADD COLUMN prev_hash {blob}",
            "ALTER TABLE audit_log ADD COLUMN row_hash {blob}",
        ),
    ),
    Migration(
        8,
        "the admin's license list filtered by status stays one index range",
        (
            # Without it, a filter on a rare status (revoked) walks every license by id.
            "CREATE INDEX IF NOT EXISTS licenses_status_id ON licenses (status, id)",
        ),
    ),
    Migration(
        9,
        "the admin's attempt log filters; who made a ban",
        (
            # The attempt log is the hot write path: each index here costs every verification
            # (bench/README.md has the before/after). Only the filters support staff use most
            # get one: a domain ("why is my site refused?") and a source address (abuse).
            # A result gets none: refusals are a large share of the log, so a newest-first
            # scan finds a page of them quickly (bench/attempt_pages.py). Each ends with at_ms:
            # the page is newest first, so a filtered page is one index range, never a sort.
            # A license and a time range use the indexes of migration 2; reason and product
            # get none (a vendor has few products).
            "CREATE INDEX IF NOT EXISTS attempts_domain ON verification_attempts (domain, at_ms)",
            "CREATE INDEX IF NOT EXISTS attempts_source_ip "
            "ON verification_attempts (source_ip, at_ms)",
            # The actor that made the ban (licensing/actors.py: "cli", "staff:3").
            "ALTER TABLE bans ADD COLUMN created_by TEXT NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        10,
        "security events, kept apart from the audit log; audit log filters stay index ranges",
        (
            # Sign-in success and failure, MFA failure, permission denied, rate limited, ...
            # (db/security_events.py). account_id is the staff account when one was named;
            # email is the account's own address, '' when the typed address matched no
            # account: then only email_hash (a keyed hash of what was typed) is kept, since a
            # password typed into the e-mail box must never be stored in clear.
            """CREATE TABLE IF NOT EXISTS security_events (
                id {pk},
                at {bigint} NOT NULL,
                kind TEXT NOT NULL,
                account_id {bigint},
                email TEXT NOT NULL DEFAULT '',
                email_hash {blob},
                source_ip TEXT NOT NULL DEFAULT '',
                user_agent TEXT NOT NULL DEFAULT '',
                detail TEXT NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX IF NOT EXISTS security_events_at ON security_events (at)",
            "CREATE INDEX IF NOT EXISTS security_events_kind ON security_events (kind, id)",
            "CREATE INDEX IF NOT EXISTS security_events_account "
            "ON security_events (account_id, id)",
            "CREATE INDEX IF NOT EXISTS security_events_email ON security_events (email_hash, id)",
            "CREATE INDEX IF NOT EXISTS security_events_ip ON security_events (source_ip, id)",
            # The audit page's filters (web/admin/audit.py): each one index range, newest first.
            "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_kind, actor_id, id)",
            "CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, id)",
            "CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, id)",
        ),
    ),
    Migration(
        11,
        "hourly attempt counts for the admin dashboard",
        (
            # Closed hours of the attempt log counted by result and reason (licensing/
            # attempt_hours.py), so the dashboard never scans the log for past hours. Each
            # folded hour has a marker row (result and reason '', attempts 0), also when the
            # hour had no attempt. No index on verification_attempts: the fold reads the
            # existing attempts_at range.
            """CREATE TABLE IF NOT EXISTS attempt_hours (
                hour {bigint} NOT NULL,
                result TEXT NOT NULL,
                reason TEXT NOT NULL,
                attempts {bigint} NOT NULL,
                PRIMARY KEY (hour, result, reason)
            )""",
        ),
    ),
    Migration(
        12,
        "licensee e-mails encrypted with a blind index; indexes for the admin's list filters",
        (
            # The e-mail as AES-GCM bound to its row (crypto/fields.py) and a keyed blind index
            # of the normalised address for exact search (NULL for no address). SQL cannot
            # encrypt: the runtime seals existing rows at start-up (licensing/pii.py), emptying
            # `licensee_email`, which from now on is only written as ''. Readers fall back to it
            # while a row is not sealed yet (a store copied or written by an older server).
            "ALTER TABLE licenses ADD COLUMN licensee_email_encrypted {blob}",
            "ALTER TABLE licenses ADD COLUMN licensee_email_index {blob}",
            "CREATE INDEX IF NOT EXISTS licenses_email_index ON licenses (licensee_email_index)",
            # Finds the rows still to seal without a scan; empty (and tiny) once they are.
            "CREATE INDEX IF NOT EXISTS licenses_email_unsealed ON licenses (id) "
            "WHERE licensee_email_encrypted IS NULL",
            # Keyset pages (id descending) filtered by product or expiry: one index range.
            "CREATE INDEX IF NOT EXISTS licenses_product_id ON licenses (product_id, id)",
            "DROP INDEX IF EXISTS licenses_product",  # a prefix of the one above
            "CREATE INDEX IF NOT EXISTS licenses_expires ON licenses (expires_at)",
        ),
    ),
    Migration(
        13,
        "vendor API: API keys, idempotency keys, license list by product in id order",
        (
            # An API key is shown once; only a SHA-256 of the whole key is kept (staff/api_keys.py
            # says why not Argon2). `prefix` is the visible part that finds the row; `scopes` a
            # JSON list of rbac grants; `created_by` the actor (licensing/actors.py) that made it.
            """CREATE TABLE IF NOT EXISTS api_keys (
                id {pk},
                prefix TEXT NOT NULL UNIQUE,
                secret_hash {blob} NOT NULL,
                name TEXT NOT NULL,
                scopes TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at {bigint} NOT NULL,
                expires_at {bigint},
                last_used_at {bigint},
                revoked_at {bigint}
            )""",
            # One row per (credential, Idempotency-Key): inserted before the request runs (the
            # UNIQUE constraint is the lock across instances), the answer filled in after it.
            # status NULL = still running. Rows older than 24 h are pruned.
            """CREATE TABLE IF NOT EXISTS api_idempotency (
                id {pk},
                api_key_id {bigint} NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
                idempotency_key TEXT NOT NULL,
                fingerprint {blob} NOT NULL,
                status {bigint},
                headers TEXT NOT NULL DEFAULT '{{}}',
                body {blob},
                created_at {bigint} NOT NULL,
                UNIQUE (api_key_id, idempotency_key)
            )""",
            "CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency (created_at)",
            # The API's license list filtered by product and status, in id order: one index
            # range per page (product alone: migration 12's licenses_product_id).
            "CREATE INDEX IF NOT EXISTS licenses_product_status_id "
            "ON licenses (product_id, status, id)",
        ),
    ),
    Migration(
        14,
        "vendor API: access-token families and rotating refresh tokens",
        (
            # One family per API-key exchange (staff/api_tokens.py): every refresh token and
            # access token descends from it. revoked_at set = every token of the family is
            # refused (a spent refresh token was presented again, or the API key was revoked).
            """CREATE TABLE IF NOT EXISTS api_token_families (
                id {pk},
                api_key_id {bigint} NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
                created_at {bigint} NOT NULL,
                revoked_at {bigint},
                revoked_reason TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX IF NOT EXISTS api_token_families_key ON api_token_families (api_key_id)",
            # One row per refresh token: only a SHA-256 of it (256 random bits, as API keys).
            # spent_at set = rotated (used once); presenting it again revokes the family.
            """CREATE TABLE IF NOT EXISTS api_refresh_tokens (
                id {pk},
                family_id {bigint} NOT NULL REFERENCES api_token_families(id) ON DELETE CASCADE,
                token_hash {blob} NOT NULL UNIQUE,
                created_at {bigint} NOT NULL,
                expires_at {bigint} NOT NULL,
                spent_at {bigint}
            )""",
            "CREATE INDEX IF NOT EXISTS api_refresh_tokens_family ON api_refresh_tokens "
            "(family_id)",
            "CREATE INDEX IF NOT EXISTS api_refresh_tokens_expires ON api_refresh_tokens "
            "(expires_at)",
        ),
    ),
    Migration(
        15,
        "alerts: what the anomaly detectors and the webhook deliveries raise for staff",
        (
            # One row per alert. (detector, subject) is its identity while it is not resolved:
            # a detector that fires again for the same subject bumps `occurrences` and
            # `last_seen_ms` of the open (or acknowledged) alert instead of adding one
            # (licensing/alerts.py); once resolved, the next firing opens a new alert.
            # `evidence` is JSON (counts, window, sample attempt ids).
            """CREATE TABLE IF NOT EXISTS alerts (
                id {pk},
                detector TEXT NOT NULL,
                subject TEXT NOT NULL,
                severity TEXT NOT NULL,
                summary TEXT NOT NULL,
                evidence TEXT NOT NULL,
                license_id {bigint},
                state TEXT NOT NULL DEFAULT 'open',
                occurrences {bigint} NOT NULL DEFAULT 1,
                first_seen_ms {bigint} NOT NULL,
                last_seen_ms {bigint} NOT NULL,
                state_changed_ms {bigint},
                state_changed_by TEXT NOT NULL DEFAULT ''
            )""",
            # At most one unresolved alert per (detector, subject), also with several
            # instances raising at once: the upsert's conflict target.
            "CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved ON alerts (detector, subject) "
            "WHERE state <> 'resolved'",
            "CREATE INDEX IF NOT EXISTS alerts_state_seen ON alerts (state, last_seen_ms)",
            "CREATE INDEX IF NOT EXISTS alerts_license ON alerts (license_id)",
        ),
    ),
    Migration(
        16,
        "customer page: reissue cooldown, customer sessions, e-mailed confirmation links",
        (
            # Hours a customer waits between two reissues of one license (0: no cooldown), and
            # when a license was last reissued (NULL: never).
            "ALTER TABLE products ADD COLUMN reissue_cooldown_hours {bigint} NOT NULL DEFAULT 0",
            "ALTER TABLE licenses ADD COLUMN last_reissued_at {bigint}",
            # A customer signed in at /activate with a license key (web/portal/sessions.py):
            # only a SHA-256 of the cookie's token; `lkh` is the key's local-key hash (the
            # key itself is never stored); idle and absolute timeouts from the two times.
            """CREATE TABLE IF NOT EXISTS portal_sessions (
                id {pk},
                token_hash {blob} NOT NULL UNIQUE,
                license_id {bigint} NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
                lkh TEXT NOT NULL,
                created_at {bigint} NOT NULL,
                last_seen_at {bigint} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS portal_sessions_seen ON portal_sessions (last_seen_at)",
            # A release or reissue waiting for the licensee to open the e-mailed link: only a
            # SHA-256 of the link's token; single use (used_at), valid until expires_at.
            """CREATE TABLE IF NOT EXISTS portal_confirmations (
                id {pk},
                token_hash {blob} NOT NULL UNIQUE,
                license_id {bigint} NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
                action TEXT NOT NULL,
                value TEXT NOT NULL DEFAULT '',
                created_at {bigint} NOT NULL,
                expires_at {bigint} NOT NULL,
                used_at {bigint}
            )""",
            "CREATE INDEX IF NOT EXISTS portal_confirmations_expires ON portal_confirmations "
            "(expires_at)",
        ),
    ),
    Migration(
        17,
        "webhooks: endpoints, the outbox of events, deliveries with leases, attempts",
        (
            # An endpoint the vendor registered: `events` is a JSON list of event types.
            # `enabled` is the staff's switch; `paused_ms` is set by the deliveries after
            # [webhooks] pause_after_failures failures in a row (and cleared by resume).
            """CREATE TABLE IF NOT EXISTS webhook_endpoints (
                id {pk},
                url TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                events TEXT NOT NULL,
                enabled {bool} NOT NULL,
                paused_ms {bigint},
                paused_reason TEXT NOT NULL DEFAULT '',
                consecutive_failures {bigint} NOT NULL DEFAULT 0,
                created_by TEXT NOT NULL,
                created_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            )""",
            # The outbox: written in the transaction of the change it describes, so an event
            # exists exactly when its change committed. `uid` is the webhook-id header.
            """CREATE TABLE IF NOT EXISTS webhook_events (
                id {pk},
                uid TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_ms {bigint} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS webhook_events_created ON webhook_events (created_ms)",
            # One delivery per event and subscribed endpoint. A delivery is claimed by one
            # instance at a time through its lease (leased_until_ms, leased_by).
            """CREATE TABLE IF NOT EXISTS webhook_deliveries (
                id {pk},
                event_id {bigint} NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
                endpoint_id {bigint} NOT NULL
                    REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                state TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
                attempts {bigint} NOT NULL DEFAULT 0,
                next_attempt_ms {bigint} NOT NULL,
                leased_until_ms {bigint} NOT NULL DEFAULT 0,
                leased_by TEXT NOT NULL DEFAULT '',
                last_status {bigint},
                last_error TEXT NOT NULL DEFAULT '',
                created_ms {bigint} NOT NULL,
                delivered_ms {bigint}
            )""",
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_due "
            "ON webhook_deliveries (state, next_attempt_ms)",
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint "
            "ON webhook_deliveries (endpoint_id, id)",
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries (event_id)",
            # Every attempt at a delivery: the receiver's status (or the error) and the time.
            """CREATE TABLE IF NOT EXISTS webhook_delivery_attempts (
                id {pk},
                delivery_id {bigint} NOT NULL
                    REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
                at_ms {bigint} NOT NULL,
                status {bigint},
                error TEXT NOT NULL DEFAULT '',
                duration_ms {bigint} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS webhook_delivery_attempts_delivery "
            "ON webhook_delivery_attempts (delivery_id, id)",
            # One row (id 1): how far the verification.refused events have read the attempt
            # log, and the storm bound's counts (JSON).
            """CREATE TABLE IF NOT EXISTS webhook_cursor (
                id {pk},
                attempt_id {bigint} NOT NULL,
                state TEXT NOT NULL
            )""",
            # The expiry sweep (licensing/expiry.py) finds lapsed licenses without a scan.
            "CREATE INDEX IF NOT EXISTS licenses_expiry ON licenses (expires_at) "
            "WHERE status IN ('active', 'pending')",
        ),
    ),
    Migration(
        18,
        "alerts: the automatic actions taken on an alert",
        (
            # One line per action the server took on its own (licensing/alert_actions.py):
            # "2026-01-31T12:00:00Z blocked 203.0.113.7 for 60 minutes". Kept apart from
            # `evidence`, which each new firing replaces, so that a bump never erases it;
            # appended with `||` (one statement, no read) on both engines.
            "ALTER TABLE alerts ADD COLUMN actions_taken TEXT NOT NULL DEFAULT ''",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


async def migrate(conn: Connection) -> list[int]:
    """Apply pending migrations inside the caller's transaction; return the versions applied."""
    current = await conn.schema_version()
    if current > LATEST:
        raise RuntimeError(
            f"database schema version {current} is newer than this server ({LATEST}); upgrade"
        )
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        for statement in migration.statements:
            await conn.execute(statement.format(**conn.ddl_types))
        await conn.set_schema_version(migration.version)
        applied.append(migration.version)
    return applied

"""Opens and closes everything the server and the CLI share: keys, database, services.

One piece of code for both, so `run.py issue` and the web app load keys and migrate the
database the same way. The keyring also learns, on demand, keys that another process added
(`KeyringReloader`); the server additionally polls for them (`app.py`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from license_server.crypto.fields import FieldCipher, LookupHasher, load_data_key
from license_server.crypto.keystore import KeyringReloader, KeyStore, load_keyring
from license_server.crypto.signing import Keyring
from license_server.db.database import Database, open_database
from license_server.licensing.alerts import Alerts
from license_server.licensing.bans import BanList
from license_server.licensing.changes import Change, ChangeFeed
from license_server.licensing.service import LicenseService
from license_server.licensing.verifier import Verifier
from license_server.one_time import OneTimeValues, one_time_values
from license_server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    licenses: LicenseService
    bans: BanList
    verifier: Verifier
    changes: ChangeFeed
    # Values accepted once (TOTP codes, set-up links), shared through Redis when configured.
    once: OneTimeValues
    alerts: Alerts  # what the detectors and the webhook deliveries raise for staff
    # Follows key changes made by other processes; None when the keys come from the environment.
    key_reloader: KeyringReloader | None = None


def load_keys(settings: Settings) -> tuple[Keyring, bytes]:
    env_keys = settings.signing_keys.get_secret_value() if settings.signing_keys else None
    env_data = settings.data_key.get_secret_value() if settings.data_key else None
    return load_keyring(settings.keys_dir, env_keys), load_data_key(settings.keys_dir, env_data)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    keyring, data_key = load_keys(settings)
    db = open_database(settings.database_location(), readers=settings.db_readers)
    await db.open()
    once = one_time_values(settings)
    try:
        changes = ChangeFeed(db)
        service = LicenseService(
            db,
            keyring,
            FieldCipher(data_key),
            LookupHasher(data_key),
            product_cache_seconds=settings.verify.cache_seconds,
            feed=changes,
        )
        bans = BanList(db, ttl=settings.verify.cache_seconds, write_path=service.write)
        changes.subscribe(_reload_bans_on_change(bans))
        verifier = Verifier(
            service,
            bans,
            issuer=settings.issuer,
            dev_patterns=settings.verify.dev_host_patterns,
            cache_seconds=settings.verify.cache_seconds,
            cache_size=settings.verify.cache_size,
        )
        sealed = await service.seal_legacy_emails()  # after migration 9: once, then none
        if sealed:
            log.info("licensee e-mails: %d rows encrypted at rest (migration 9)", sealed)
        # A key refused for an unknown key hint may be genuine under the changed keyring.
        keyring.add_listener(lambda _: verifier.forget_refusals())
        reloader = None
        if settings.signing_keys is None:
            reloader = KeyringReloader(keyring, KeyStore(settings.keys_dir))
            keyring.set_refresher(reloader.refresh)
        yield Runtime(
            settings, db, keyring, service, bans, verifier, changes, once,
            Alerts(db, service.clock), key_reloader=reloader,
        )  # fmt: skip
    finally:
        await once.close()
        await db.close()


def _reload_bans_on_change(bans: BanList):
    def listener(change: Change) -> None:
        if change.bans:
            bans.forget()

    return listener

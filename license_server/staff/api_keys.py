"""API keys: the credentials of the vendor's own systems (billing, store) for the vendor API.

A key is `lsk_live_<12 hex>_<43 base64url characters>`: the first part is its visible prefix
(listed in the admin, written into the audit log as the actor, used to find the row); the rest
is 32 random bytes from `secrets` (ASVS 4.0.3 V2.10.4, V6.3.1). The whole key is shown once,
when it is made; only its SHA-256 is stored (V2.10.2: no plain secret at rest).

Why SHA-256 and not Argon2id as for staff passwords (ASVS V2.4 applies to passwords people
choose): a slow, salted hash exists to make guessing a low-entropy secret from a stolen hash
expensive. A 256-bit random secret cannot be guessed whatever the hash costs (V2.9.2 and V6.2
ask for an approved primitive of adequate strength, V6.4.1 for secrets kept out of reach; a
preimage of SHA-256 over 2^256 candidates is out of reach), so a fast hash protects it as well,
and a slow one would cost every API request tens of milliseconds of CPU and 64 MiB of memory:
a denial of service for anyone who can send bad keys. The comparison is constant-time
(`hmac.compare_digest`).

Scopes are `resource:action` permissions of staff/rbac.py's catalogue, wildcards written as the
roles write them (`license:*`, `*`); a key may do only what its scopes grant (V4.1.3). A key may
expire and may be revoked; either ends it at its next request. The last-use time is written at
most once a minute per key (by any process: the UPDATE itself checks), not once per request.

`ApiKeys` is the service (the CLI and the API's authentication use it); `ApiKeyConsole` is what
the admin calls, checking the staff member's permission again (DESIGN.md: route and service).
Creating and revoking go through the license service's single write path, audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from license_server.db import api_keys as key_rows
from license_server.db import api_tokens as token_rows
from license_server.db.errors import UniqueViolation
from license_server.licensing.actors import Actor, api_actor
from license_server.licensing.service import LicenseService, NotFound
from license_server.licensing.specs import RequiredText, end_of_day_utc
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require

KEY_PREFIX = "lsk_live_"
_KEY = re.compile(r"^(lsk_live_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# A use is recorded at most this often per key.
TOUCH_EVERY_SECONDS = 60


class KeyState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class NewApiKey(BaseModel):
    """What a new key is made from (the admin's form, the CLI): validated as every input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RequiredText = Field(min_length=1, max_length=100)
    scopes: tuple[str, ...] = Field(min_length=1, max_length=len(rbac.PERMISSIONS) + 20)
    expires: dt.date | None = None

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        rbac.expand_grants(list(values))  # ValueError names the grant outside the catalogue
        return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    prefix: str
    name: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None

    @property
    def actor(self) -> Actor:
        return api_actor(self.prefix)

    @property
    def permissions(self) -> frozenset[str]:
        return rbac.expand_grants(list(self.scopes))

    def may(self, permission: str) -> bool:
        if permission not in rbac.PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        return permission in self.permissions

    def state(self, now: int) -> KeyState:
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        return KeyState.ACTIVE


def key_from_row(row: dict) -> ApiKey:
    return ApiKey(
        id=row["id"], prefix=row["prefix"], name=row["name"],
        scopes=tuple(json.loads(row["scopes"])), created_by=row["created_by"],
        created_at=row["created_at"], expires_at=row["expires_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"],
    )  # fmt: skip


def secret_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The outcome of presenting a key: the key when it may act, else why not."""

    key: ApiKey | None
    problem: str = ""  # "", "invalid", "expired", "revoked"


class ApiKeys:
    def __init__(self, licenses: LicenseService) -> None:
        self._licenses = licenses
        self._touched: dict[int, int] = {}  # key id -> when this process last recorded a use

    def now(self) -> int:
        return self._licenses.now()

    async def create(self, actor: Actor, new: NewApiKey) -> tuple[ApiKey, str]:
        """A new key and its full text, which is shown this once."""
        now = self._licenses.now()
        expires_at = None if new.expires is None else end_of_day_utc(new.expires)
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires: the expiry date must not be in the past")
        for _ in range(5):  # 48 random bits of prefix: a clash is rare, and retried
            prefix = KEY_PREFIX + secrets.token_hex(6)
            key = f"{prefix}_{secrets.token_urlsafe(32)}"

            async def work(writes, prefix=prefix, key=key) -> int:
                key_id = await key_rows.insert_api_key(
                    writes.conn, prefix=prefix, secret_hash=secret_hash(key), name=new.name,
                    scopes=json.dumps(list(new.scopes)), created_by=str(actor),
                    created_at=writes.now, expires_at=expires_at,
                )  # fmt: skip
                await self._licenses.audit.append(
                    writes.conn, at=writes.now, actor=actor, action="api_key.create",
                    target=f"api_key:{key_id}",
                    detail={"prefix": prefix, "name": new.name, "scopes": list(new.scopes),
                            "expires_at": expires_at},
                )  # fmt: skip
                return key_id

            try:
                key_id = await self._licenses.write(actor, work)
            except UniqueViolation:
                continue
            return await self.by_id(key_id), key
        raise RuntimeError("could not find a free API key prefix")

    async def revoke(self, actor: Actor, key_id: int) -> ApiKey:
        """Revoke a live key (NotFound for no such key, ValueError if already revoked)."""

        async def work(writes) -> bool:
            row = await key_rows.api_key_by_id(writes.conn, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id}")
            if not await key_rows.revoke_api_key(writes.conn, key_id, writes.now):
                return False
            # Its access-token families end with it (staff/api_tokens.py).
            await token_rows.revoke_families_of_key(writes.conn, key_id, writes.now)
            await self._licenses.audit.append(
                writes.conn, at=writes.now, actor=actor, action="api_key.revoke",
                target=f"api_key:{key_id}", detail={"prefix": row["prefix"]},
            )  # fmt: skip
            return True

        if not await self._licenses.write(actor, work):
            raise ValueError("this API key is already revoked")
        return await self.by_id(key_id)

    async def by_id(self, key_id: int) -> ApiKey:
        async with self._licenses.db.read() as conn:
            row = await key_rows.api_key_by_id(conn, key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id}")
        return key_from_row(row)

    async def all(self) -> list[ApiKey]:
        async with self._licenses.db.read() as conn:
            return [key_from_row(row) for row in await key_rows.all_api_keys(conn)]

    async def authenticate(self, presented: str) -> Authenticated:
        """The key a request presents, if it is genuine, live and unexpired (ASVS V2.10)."""
        match = _KEY.match(presented)
        if match is None:
            return Authenticated(None, "invalid")
        async with self._licenses.db.read() as conn:
            row = await key_rows.api_key_by_prefix(conn, match.group(1))
        # Compared even when there is no row, so that an unknown prefix takes the same time.
        stored = row["secret_hash"] if row is not None else b"\0" * 32
        genuine = hmac.compare_digest(bytes(stored), secret_hash(presented))
        if row is None or not genuine:
            return Authenticated(None, "invalid")
        key = key_from_row(row)
        now = self._licenses.now()
        state = key.state(now)
        if state is not KeyState.ACTIVE:
            return Authenticated(None, state.value)
        await self._touch(key, now)
        return Authenticated(key)

    async def _touch(self, key: ApiKey, now: int) -> None:
        if now - self._touched.get(key.id, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS:
            return
        if key.last_used_at is not None and now - key.last_used_at < TOUCH_EVERY_SECONDS:
            self._touched[key.id] = key.last_used_at  # another process recorded it
            return
        self._touched[key.id] = now
        async with self._licenses.db.write() as conn:
            await key_rows.touch_api_key(conn, key.id, now, TOUCH_EVERY_SECONDS)


class ApiKeyConsole:
    """The admin's API key functions: each checks the staff member's permission again."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def all(self, staff: SignedIn) -> list[ApiKey]:
        require(staff, "api_key:read")
        return await self._keys.all()

    async def create(self, staff: SignedIn, new: NewApiKey) -> tuple[ApiKey, str]:
        require(staff, "api_key:create")
        return await self._keys.create(staff.actor, new)

    async def revoke(self, staff: SignedIn, key_id: int) -> ApiKey:
        require(staff, "api_key:revoke")
        return await self._keys.revoke(staff.actor, key_id)

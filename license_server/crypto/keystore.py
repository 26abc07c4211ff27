"""Signing keys on disk, and their staged rollout: published -> active -> retired.

A new key is first *published* (in the JWKS and trusted for verification, so module releases
can ship its public key), later *activated* (it signs; the previous key stops signing but stays
published), and *retired* only once nothing it signed can still be valid (that check needs the
database and lives in `licensing/key_retirement.py`). This is the staged rollout of ASVS 4.0.3
V6.4.2 (keys can be rotated) without switching off modules that only know the old keys.

Files in `<keys_dir>/signing/`:
- `<created-ns>.pem`: one private key each (PKCS#8, 0600), written once, never changed.
- `keyring.json`: the state (active kid; per kid when it started and stopped signing, and when
  it was retired), replaced atomically. Without it (deployments from before staged rotation)
  the newest key is active, as it always was.
The state is always written *before* a new PEM exists, so a process that reads the directory
half-way through a rotation sees at most a published key, never a new active one. Changes are
made under an exclusive lock (`.lock`) so two commands cannot lose each other's update, and a
first run creates exactly one key even when several processes start at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from license_server.crypto.keyfiles import (
    KeyFileError,
    directory_lock,
    ensure_private_dir,
    replace_file,
    write_secret,
)
from license_server.crypto.signing import (
    Keyring,
    SigningKey,
    b64url,
    generate_key,
    keyring_from_pem,
    load_key_file,
)

log = logging.getLogger(__name__)

STATE_FILE = "keyring.json"
STATE_VERSION = 1


class KeyRefused(ValueError):
    """A key operation that the key's state does not allow; the message is one line."""


@dataclass(frozen=True)
class KeyRecord:
    """What the state file knows about one key; times are Unix seconds, None for never."""

    kid: str
    created_ns: int
    signing_from: int | None = None
    signing_until: int | None = None
    retired_at: int | None = None

    @property
    def created(self) -> int:
        return self.created_ns // 1_000_000_000


@dataclass(frozen=True)
class KeyState:
    active: str
    records: dict[str, KeyRecord]

    def state_of(self, kid: str) -> str:
        if kid == self.active:
            return "active"
        return "retired" if self.records[kid].retired_at is not None else "published"


class KeyStore:
    """The signing-key directory of one `keys_dir`."""

    def __init__(self, keys_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = keys_dir / "signing"
        self.state_path = self.directory / STATE_FILE
        self.clock = clock

    # -- reading ----------------------------------------------------------------------------

    def load(self) -> tuple[list[SigningKey], str]:
        """The published keys and the active kid, creating the first key on a first run."""
        ensure_private_dir(self.directory)
        if not self._pem_paths():
            with directory_lock(self.directory):
                if not self._pem_paths():  # another process may have won meanwhile
                    self._create_key()
        return self.published()

    def state(self) -> tuple[KeyState, dict[str, SigningKey]]:
        """The state (from the file, or derived from the PEM files) and every key on disk."""
        keys = {key.kid: key for key in (load_key_file(p) for p in self._pem_paths())}
        saved = self._read_state()
        if saved is None:
            return _derived_state(list(keys.values())), keys
        records = dict(saved.records)
        for key in keys.values():  # a PEM the state does not know (copied in): published
            records.setdefault(key.kid, KeyRecord(key.kid, key.created_at))
        return KeyState(saved.active, records), keys

    def record(self, kid: str) -> KeyRecord:
        """The record of a key that has a file; KeyRefused for an unknown kid."""
        state, keys = self.state()
        if kid not in state.records or kid not in keys:
            raise KeyRefused(f"no signing key with kid {kid!r} (see: run.py keys)")
        return state.records[kid]

    def fingerprint(self) -> tuple:
        """Cheap: changes whenever a key file appears or goes, or the state is replaced."""
        try:
            names = tuple(sorted(e.name for e in os.scandir(self.directory) if _is_pem(e.name)))
        except FileNotFoundError:
            names = ()
        try:
            info = self.state_path.stat()
            state = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            state = None
        return names, state

    # -- changes ------------------------------------------------------------------------------

    def rotate(self) -> SigningKey:
        """Add a published key that does not sign yet."""
        ensure_private_dir(self.directory)
        with directory_lock(self.directory):
            if not self._pem_paths():
                self._create_key()  # a first run: the first key signs, the new one waits
            state, _ = self.state()
            created = max(time.time_ns(), *(r.created_ns + 1 for r in state.records.values()))
            key, pem = generate_key(created)
            records = {**state.records, key.kid: KeyRecord(key.kid, created)}
            # State first: until the PEM exists, readers skip the record; after, it is published.
            self._write_state(KeyState(state.active, records))
            write_secret(self.directory / f"{created}.pem", pem)
            return key

    def activate(self, kid: str) -> KeyRecord:
        """Make a published key the signer; the previous one stops signing but stays published."""
        with directory_lock(self.directory):
            state, keys = self.state()
            record = state.records.get(kid)
            if record is None or kid not in keys:
                raise KeyRefused(f"no signing key with kid {kid!r} (see: run.py keys)")
            if record.retired_at is not None:
                raise KeyRefused(f"key {kid} is retired; rotate-keys makes a new one")
            if kid == state.active:
                raise KeyRefused(f"key {kid} is already the active key")
            now = int(self.clock())
            records = dict(state.records)
            records[state.active] = replace(records[state.active], signing_until=now)
            records[kid] = replace(record, signing_from=now, signing_until=None)
            self._write_state(KeyState(kid, records))
            return records[kid]

    def retire(self, kid: str, may_retire: Callable[[KeyRecord], str | None]) -> KeyRecord:
        """Stop publishing a key. `may_retire(record)` returns why not, or None when it may."""
        with directory_lock(self.directory):
            state, _ = self.state()
            record = state.records.get(kid)
            if record is None:
                raise KeyRefused(f"no signing key with kid {kid!r} (see: run.py keys)")
            if record.retired_at is not None:
                raise KeyRefused(f"key {kid} is already retired")
            if kid == state.active:
                raise KeyRefused(f"key {kid} is the active key; activate another key first")
            refusal = may_retire(record)
            if refusal:
                raise KeyRefused(f"key {kid} cannot be retired yet: {refusal}")
            records = {**state.records, kid: replace(record, retired_at=int(self.clock()))}
            self._write_state(KeyState(state.active, records))
            return records[kid]

    # -- internals ---------------------------------------------------------------------------

    def _pem_paths(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.pem") if _is_pem(p.name))

    def published(self) -> tuple[list[SigningKey], str]:
        """The keys to trust (all but the retired) and the active kid, as on disk now."""
        state, keys = self.state()
        if state.active not in keys:
            raise KeyFileError(
                f"the active signing key {state.active} has no file in {self.directory}"
            )
        published = [key for kid, key in keys.items() if state.records[kid].retired_at is None]
        return published, state.active

    def _create_key(self) -> SigningKey:
        key, pem = generate_key(time.time_ns())
        if self.state_path.exists():
            # A state without any key file left (keys deleted by hand): start it afresh.
            self._write_state(KeyState(key.kid, {key.kid: KeyRecord(key.kid, key.created_at)}))
        write_secret(self.directory / f"{key.created_at}.pem", pem)
        return key

    def _read_state(self) -> KeyState | None:
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError("unknown version")
            records = {
                kid: KeyRecord(kid=kid, **{k: v for k, v in fields.items() if k != "kid"})
                for kid, fields in data["keys"].items()
            }
            active = data["active"]
            if active not in records:
                raise ValueError("the active key has no record")
            for record in records.values():
                if not isinstance(record.created_ns, int):
                    raise ValueError("created_ns must be an integer")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KeyFileError(f"{self.state_path} is not a valid keyring state ({exc})") from None
        return KeyState(active, records)

    def _write_state(self, state: KeyState) -> None:
        data = {
            "version": STATE_VERSION,
            "active": state.active,
            "keys": {kid: asdict(record) for kid, record in state.records.items()},
        }
        replace_file(self.state_path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def _is_pem(name: str) -> bool:
    return name.endswith(".pem") and name[:-4].isdigit()


def _derived_state(keys: list[SigningKey]) -> KeyState:
    """The state of a directory without a state file: the newest key is active, and each
    older key stopped signing when the next one was created (the old rotation rule)."""
    ordered = sorted(keys, key=lambda k: k.created_at)
    records = {}
    for index, key in enumerate(ordered):
        nxt = ordered[index + 1] if index + 1 < len(ordered) else None
        records[key.kid] = KeyRecord(
            key.kid,
            key.created_at,
            signing_from=key.created_at // 1_000_000_000,
            signing_until=None if nxt is None else nxt.created_at // 1_000_000_000,
        )
    return KeyState(ordered[-1].kid, records)


def load_keyring(keys_dir: Path, env_pem: str | None = None) -> Keyring:
    """Keys from the environment if given, else from `keys_dir`, creating one on first run."""
    if env_pem:
        return keyring_from_pem(env_pem)
    keys, active = KeyStore(keys_dir).load()
    return Keyring(keys, active)


TOKEN_KEY_DIR = "tokens"  # noqa: S105 # nosec B105


def load_token_keyring(keys_dir: Path) -> Keyring:
    """The Ed25519 keys that sign the vendor API's access tokens (staff/api_tokens.py), in
    `<keys_dir>/tokens/<created-ns>.pem`, one created on first run (mode 0600, under the
    directory lock so that processes starting together make one). The newest signs; every key
    there verifies and is published at `/api/v1/tokens/jwks.json`. To rotate, put a new key
    file there (`<nanoseconds>.pem`) and restart; remove the old one 15 minutes later.

    A key of its own, never a license-signing key (RFC 8725 §3.9 and ASVS 4.0.3 V3.5.3: one
    key per purpose): a token can then never pass for a local key or a license answer, nor the
    other way round, and rotating one never disturbs the other."""
    directory = keys_dir / TOKEN_KEY_DIR
    ensure_private_dir(directory)

    def paths() -> list[Path]:
        return sorted(p for p in directory.glob("*.pem") if _is_pem(p.name))

    if not paths():
        with directory_lock(directory):
            if not paths():
                key, pem = generate_key(time.time_ns())
                write_secret(directory / f"{key.created_at}.pem", pem)
    return Keyring([load_key_file(path) for path in paths()])


def client_snippets(key: SigningKey) -> tuple[str, str]:
    """The public key as module authors paste it: PHP `public_keys` entry, JWKS entry."""
    php = f"'{key.kid}' => '{b64url(key.public_raw)}',"
    return php, json.dumps(key.jwk())


class KeyringReloader:
    """Keeps a running server's keyring in step with the key files changed by the CLI.

    `refresh()` looks at the directory (one stat and a listing, off the event loop) and reloads
    the keys when they changed. It is single-flight and throttled: any number of callers share
    one look, at most one per `min_interval`, so forged license keys with unknown key hints
    cannot make the server re-read its keys constantly. A caller always gets a look that began
    after it called, so a key activated before a request arrived is known when it is decided.
    """

    def __init__(self, keyring: Keyring, store: KeyStore, min_interval: float = 0.1) -> None:
        self.keyring = keyring
        self.store = store
        self.min_interval = min_interval
        self._lock = asyncio.Lock()
        self._looks = 0
        self._last_look = float("-inf")
        self._seen: tuple | None = None  # None: the first look reloads once, to be sure
        self._failed: tuple | None = None

    async def refresh(self) -> bool:
        """True if the keyring changed."""
        ticket = self._looks
        async with self._lock:
            if self._looks > ticket:
                return False  # a look that started after our call has just finished
            loop = asyncio.get_running_loop()
            wait = self._last_look + self.min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # throttle; the others queue on the lock
            self._looks += 1
            self._last_look = loop.time()
            return await self._look()

    async def _look(self) -> bool:
        fingerprint = await asyncio.to_thread(self.store.fingerprint)
        if fingerprint == self._seen:
            return False
        try:
            keys, active = await asyncio.to_thread(self.store.published)
        except (KeyFileError, OSError) as exc:
            if fingerprint != self._failed:  # one warning per broken state, not per second
                log.warning("signing keys changed but cannot be loaded, keeping the old: %s", exc)
                self._failed = fingerprint
            return False
        self._seen = fingerprint
        changed = self.keyring.replace(keys, active)
        if changed:
            log.info(
                "signing keys reloaded: active %s, %d published", active, len(self.keyring.keys)
            )
        return changed

    async def run(self, interval: float = 1.0) -> None:
        """Background pickup of changes, about once per `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("checking the signing keys failed; will retry")

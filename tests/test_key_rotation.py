"""Staged signing-key rotation: published -> active -> retired, and running servers follow it.

Unit tests of the key store and the keyring, then the whole rollout against a real server
process while the CLI rotates, activates and retires keys in other processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
import pytest

from license_server import app as app_module
from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.client import public_keys_from_jwks, verify_answer
from license_server.crypto.keyfiles import KeyFileError
from license_server.crypto.keystore import (
    KeyRecord,
    KeyRefused,
    KeyringReloader,
    KeyStore,
    load_keyring,
)
from license_server.crypto.signing import Keyring, generate_key
from license_server.licensing.key_retirement import SIGNING_LAG_SECONDS, SignedByKey, refusal
from license_server.licensing.license_keys import (
    UnknownKeyHint,
    make_license_key,
    parse_signed_key,
)
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.runtime import open_runtime
from tests.conftest import with_sections
from tests.server_process import ServerProcess
from tests.store_helpers import query
from tests.verify_helpers import nonce

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def jwks_kids(keyring: Keyring) -> set[str]:
    return {entry["kid"] for entry in json.loads(keyring.jwks_body)["keys"]}


# --- the key store: states and refusals ------------------------------------------------------


def test_rotate_publishes_a_key_that_does_not_sign(tmp_path):
    first = load_keyring(tmp_path).active
    new = KeyStore(tmp_path).rotate()
    keyring = load_keyring(tmp_path)
    assert keyring.active.kid == first.kid  # still the signer
    assert jwks_kids(keyring) == {first.kid, new.kid}  # but the new key is published
    assert keyring.get(new.kid) is not None  # and trusted for verification


def test_activate_switches_the_signer_and_keeps_the_old_key(tmp_path):
    first = load_keyring(tmp_path).active
    store = KeyStore(tmp_path, clock=lambda: 1_000_000)
    new = store.rotate()
    record = store.activate(new.kid)
    assert record.signing_from == 1_000_000
    keyring = load_keyring(tmp_path)
    assert keyring.active.kid == new.kid
    assert jwks_kids(keyring) == {first.kid, new.kid}
    state, _ = store.state()
    assert state.records[first.kid].signing_until == 1_000_000
    assert state.state_of(first.kid) == "published"


def test_activate_and_retire_refuse_what_the_state_does_not_allow(tmp_path):
    first = load_keyring(tmp_path).active
    store = KeyStore(tmp_path)
    with pytest.raises(KeyRefused, match="no signing key with kid 'nope'"):
        store.activate("nope")
    with pytest.raises(KeyRefused, match="already the active key"):
        store.activate(first.kid)
    with pytest.raises(KeyRefused, match="is the active key"):
        store.retire(first.kid, lambda record: None)
    with pytest.raises(KeyRefused, match="no signing key"):
        store.retire("", lambda record: None)
    new = store.rotate()
    with pytest.raises(KeyRefused, match="cannot be retired yet: busy"):
        store.retire(new.kid, lambda record: "busy")
    store.retire(new.kid, lambda record: None)
    keyring = load_keyring(tmp_path)
    assert keyring.get(new.kid) is None and new.kid not in jwks_kids(keyring)
    with pytest.raises(KeyRefused, match="already retired"):
        store.retire(new.kid, lambda record: None)
    with pytest.raises(KeyRefused, match="is retired"):
        store.activate(new.kid)


def test_without_a_state_file_the_newest_key_is_active(tmp_path):
    # A directory written before staged rotation: PEM files only, the newest signed.
    signing = tmp_path / "signing"
    signing.mkdir(mode=0o700)
    keys = []
    for created in (1_700_000_000_000_000_000, 1_700_000_100_000_000_000):
        key, pem = generate_key(created)
        (signing / f"{created}.pem").write_bytes(pem)
        (signing / f"{created}.pem").chmod(0o600)
        keys.append(key)
    assert load_keyring(tmp_path).active.kid == keys[1].kid
    state, _ = KeyStore(tmp_path).state()
    assert state.records[keys[0].kid].signing_until == 1_700_000_100  # when its successor came
    KeyStore(tmp_path).rotate()  # the first rotation writes the state; the newest stays active
    assert load_keyring(tmp_path).active.kid == keys[1].kid


def test_the_state_is_written_before_the_new_key_file(tmp_path):
    first = load_keyring(tmp_path).active
    new = KeyStore(tmp_path).rotate()
    # A crash between the two writes leaves the state without the file: the key is skipped.
    (tmp_path / "signing" / f"{new.created_at}.pem").unlink()
    keyring = load_keyring(tmp_path)
    assert keyring.active.kid == first.kid and keyring.get(new.kid) is None


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"version": 9}', b'{"version": 1, "active": "x", "keys": {}}']
)
def test_a_broken_state_file_is_one_clear_error(tmp_path, content):
    load_keyring(tmp_path)
    KeyStore(tmp_path).rotate()
    (tmp_path / "signing" / "keyring.json").write_bytes(content)
    with pytest.raises(KeyFileError, match="is not a valid keyring state"):
        load_keyring(tmp_path)


# --- the keyring: changes in place ------------------------------------------------------------


def test_keyring_replace_changes_every_holder_and_calls_listeners(tmp_path):
    keyring = load_keyring(tmp_path)
    seen = []
    keyring.add_listener(lambda changed: seen.append(changed.generation))
    assert not keyring.replace(list(keyring.keys), keyring.active.kid)  # nothing changed
    new = KeyStore(tmp_path).rotate()
    holder = keyring  # what the service, verifier and views hold
    assert keyring.replace(*KeyStore(tmp_path).published())
    assert holder.get(new.kid) is not None and new.kid in jwks_kids(holder)
    assert seen == [1] and keyring.generation == 1


def test_a_key_hint_no_known_key_has_is_a_distinct_refusal(tmp_path):
    keyring = load_keyring(tmp_path)
    other_dir = tmp_path / "other"
    other = load_keyring(other_dir)
    if other.active.hint == keyring.active.hint:
        pytest.skip("the two random keys share their one-byte hint")
    with pytest.raises(UnknownKeyHint):
        parse_signed_key(keyring, make_license_key(other, "ACME", 5))


async def test_reloader_picks_up_a_new_active_key_and_looks_once_for_many(tmp_path):
    keyring = load_keyring(tmp_path)
    store = KeyStore(tmp_path)
    reloader = KeyringReloader(keyring, store, min_interval=0)
    await reloader.refresh()  # the first look settles on what is on disk
    new = store.rotate()
    store.activate(new.kid)
    looks_before = reloader._looks
    results = await asyncio.gather(*(reloader.refresh() for _ in range(50)))
    assert keyring.active.kid == new.kid
    assert results.count(True) == 1
    assert reloader._looks - looks_before <= 2  # shared, not one look per caller


async def test_reloader_keeps_the_old_keys_when_the_new_state_is_broken(tmp_path, caplog):
    keyring = load_keyring(tmp_path)
    reloader = KeyringReloader(keyring, KeyStore(tmp_path), min_interval=0)
    (tmp_path / "signing" / "keyring.json").write_bytes(b"{broken")
    assert not await reloader.refresh()
    assert not await reloader.refresh()
    assert keyring.active is not None
    assert caplog.text.count("cannot be loaded") == 1  # one warning, not one per look


# --- retirement rules ------------------------------------------------------------------------


def test_retirement_waits_for_live_licenses_and_offline_keys():
    now = 10 * DAY
    window = SignedByKey(live_licenses=0, offline_seconds=3 * DAY)
    never_signed = KeyRecord("k", 0)
    assert refusal(window, never_signed, now) is None
    assert "1 license key not revoked" in refusal(SignedByKey(1, 0), never_signed, now)
    stopped = KeyRecord("k", 0, signing_from=0, signing_until=now - 3 * DAY)
    assert "may be valid until" in refusal(window, stopped, now)
    long_ago = KeyRecord("k", 0, signing_from=0, signing_until=now - 3 * DAY - SIGNING_LAG_SECONDS)
    assert refusal(window, long_ago, now) is None
    assert "still signing" in refusal(window, KeyRecord("k", 0, signing_from=0), now)


async def test_issue_records_the_signer_and_old_rows_fall_back_to_the_hint(settings):
    from license_server.licensing.key_retirement import signed_by

    async with open_runtime(settings) as runtime:
        await runtime.licenses.create_product(ProductSpec(code="m", name="M"))
        license, _ = await runtime.licenses.issue(
            LicenseSpec(product="m", licensee="A", email="a@example.org")
        )
        kid = runtime.keyring.active.kid
        async with runtime.db.read() as conn:
            recorded = await conn.fetch_value(
                "SELECT signing_kid FROM licenses WHERE id = ?", (license.id,)
            )
        assert recorded == kid
        assert (await signed_by(runtime.licenses, kid)).live_licenses == 1
        async with runtime.db.write() as conn:  # as if issued before the column existed
            await conn.execute("UPDATE licenses SET signing_kid = NULL")
        assert (await signed_by(runtime.licenses, kid)).live_licenses == 1
        await runtime.licenses.apply(license.id, Action.REVOKE)
        assert (await signed_by(runtime.licenses, kid)).live_licenses == 0


# --- the CLI ---------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_environment_keys_refuse_rotation_in_one_line(tmp_path, database_url):
    _, pem = generate_key(1)
    env = {
        "LICENSE_SERVER_SIGNING_KEYS": pem.decode(),
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }
    for args in (["rotate-keys"], ["rotate-keys", "--activate", "x"], ["retire", "x"]):
        result = cli(env, *args)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "LICENSE_SERVER_SIGNING_KEYS" in result.stderr
    listed = cli(env, "keys")
    assert listed.returncode == 0 and "active" in listed.stdout


def test_rotate_keys_prints_the_key_as_the_clients_take_it(tmp_path, database_url):
    env = {
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }
    out = cli(env, "rotate-keys").stdout
    keyring = load_keyring(tmp_path / "keys")
    new = next(key for key in keyring.keys if key is not keyring.active)
    x = json.loads(keyring.jwks_body)["keys"][0]["x"]
    assert f"'{new.kid}' => '{x}'," in out  # the PHP client's public_keys entry
    jwk_line = next(line.strip() for line in out.splitlines() if line.strip().startswith("{"))
    assert new.kid in public_keys_from_jwks({"keys": [json.loads(jwk_line)]})  # Python client
    assert f"--activate {new.kid}" in out
    listed = cli(env, "keys").stdout
    assert f"{new.kid}  published" in listed and f"{keyring.active.kid}  active" in listed


async def test_a_key_signed_by_a_key_activated_elsewhere_verifies_at_once(
    aiohttp_client, settings, monkeypatch
):
    # The background pickup is pushed out of reach: only the on-demand look can find the key.
    monkeypatch.setattr(app_module, "KEY_RELOAD_SECONDS", 3600)
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    await runtime.licenses.create_product(ProductSpec(code="mymod", name="M"))
    store = KeyStore(settings.keys_dir)
    while True:  # a new key whose hint differs, so the server cannot know it by its hint
        new = store.rotate()
        if new.hint != runtime.keyring.active.hint:
            break
    store.activate(new.kid)
    async with open_runtime(settings) as cli_runtime:  # what `run.py issue` does
        _, key = await cli_runtime.licenses.issue(
            LicenseSpec(product="mymod", licensee="A", email="a@example.org")
        )
    generation = runtime.keyring.generation
    sent = nonce()
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": "shop.com", "nonce": sent}
    )
    body = await response.read()
    assert json.loads(body)["status"] == "active", body
    assert runtime.keyring.generation > generation
    assert runtime.keyring.active.kid == new.kid
    assert response.headers["License-Signature"].startswith(f'keyid="{new.kid}"')


async def test_forged_keys_with_unknown_hints_share_throttled_looks(
    aiohttp_client, settings, monkeypatch
):
    monkeypatch.setattr(app_module, "KEY_RELOAD_SECONDS", 3600)
    # One address sends all of them: the rate limiter would answer most with 429.
    unlimited = with_sections(settings, rate_limit={"enabled": False})
    client = await aiohttp_client(create_app(unlimited))
    runtime = client.app[RUNTIME]
    reloader = runtime.key_reloader
    stranger = load_keyring(settings.keys_dir.parent / "stranger")
    forged = [make_license_key(stranger, "MYMOD", n) for n in range(1, 41)]
    if stranger.active.hint in {k.hint for k in runtime.keyring.keys}:
        pytest.skip("the stranger's key shares a hint with the server's")
    looks = reloader._looks
    answers = await asyncio.gather(
        *(
            client.post("/api/v1/verify", json={"license_key": k, "domain": "a.com", "nonce": n})
            for k, n in zip(forged, [nonce() for _ in forged], strict=True)
        )
    )
    for answer in answers:
        assert (await answer.json())["reason"] == "bad_signature"
    assert reloader._looks - looks <= 3  # 40 forged keys, a few shared looks


# --- the rollout against a running server ----------------------------------------------------


def _post_verify(server: ServerProcess, key: str) -> tuple[dict, str]:
    sent_nonce = nonce()
    body = json.dumps({"license_key": key, "domain": "shop.example.com", "nonce": sent_nonce})
    request = urllib.request.Request(
        f"{server.url}/api/v1/verify",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        raw = response.read()
        signature = response.headers["License-Signature"]
    published = public_keys_from_jwks(json.loads(server.get("/.well-known/jwks.json")))
    document = verify_answer(raw, signature, published, nonce=sent_nonce, now=time.time())
    return document, signature


def _jwks(server: ServerProcess) -> set[str]:
    return {entry["kid"] for entry in json.loads(server.get("/.well-known/jwks.json"))["keys"]}


def _wait_for(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {timeout} s: {what}")
        time.sleep(0.05)  # bounded poll of the background pickup


def test_staged_rotation_against_a_running_server(tmp_path, database_url):
    env = {
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }

    def run(*args: str) -> str:
        result = cli(env, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("create-product", "--code", "mymod", "--name", "M", "--seats", "5")
    old_key = run("issue", "--product", "mymod", "--licensee", "A", "--email", "a@example.org")
    old_key = old_key.splitlines()[-1]
    old_kid = load_keyring(tmp_path / "keys").active.kid
    with ServerProcess(database_url, tmp_path / "keys", tmp_path, env) as server:
        assert _jwks(server) == {old_kid}
        new_kid = run("rotate-keys").split()[3].rstrip(";")
        _wait_for(lambda: new_kid in _jwks(server), "the published key in the JWKS")
        # Published, not signing: a license issued now is signed by the old key and verifies.
        between = run("issue", "--product", "mymod", "--licensee", "B", "--email", "b@ex.org")
        document, signature = _post_verify(server, between.splitlines()[-1])
        assert document["status"] == "active" and f'keyid="{old_kid}"' in signature

        run("rotate-keys", "--activate", new_kid)
        issued = run("issue", "--product", "mymod", "--licensee", "C", "--email", "c@ex.org")
        # No poll: it verifies at once, and its answer is signed with a published key.
        document, _ = _post_verify(server, issued.splitlines()[-1])  # checks it against the JWKS
        assert document["status"] == "active", document
        assert jwt.get_unverified_header(document["local_key"])["kid"] in _jwks(server)
        _wait_for(
            lambda: f'keyid="{new_kid}"' in _post_verify(server, issued.splitlines()[-1])[1],
            "the server signing with the activated key",
        )
        assert _post_verify(server, old_key)[0]["status"] == "active"  # old keys still verify

        refused = cli(env, "retire", old_kid)
        assert refused.returncode == 1 and "not revoked" in refused.stderr
        assert refused.stderr.count("\n") == 1
        run("revoke", old_key)
        run("revoke", between.splitlines()[-1])
        refused = cli(env, "retire", old_kid)
        assert refused.returncode == 1 and "may be valid until" in refused.stderr
        # Let the offline window pass: move the recorded end of its signing into the past.
        state_path = tmp_path / "keys" / "signing" / "keyring.json"
        state = json.loads(state_path.read_text())
        state["keys"][old_kid]["signing_until"] -= 22 * DAY  # 7 + 14 days, plus the lag
        state_path.write_text(json.dumps(state))
        run("retire", old_kid)
        _wait_for(lambda: old_kid not in _jwks(server), "the retired key leaving the JWKS")
        assert _jwks(server) == {new_kid}
        assert f"{old_kid}  retired" in run("keys")
        assert query(database_url, "SELECT COUNT(*) FROM licenses")[0][0] == 3


def test_a_kid_that_starts_with_a_dash_is_a_value_not_an_option():
    """One kid in 64 starts with '-' (base64url); `retire` and `--activate` take it as it is."""
    from license_server.cli import _kid_arguments, build_parser

    kid = "-" + "Ab_9" * 10 + "xy"  # 43 characters, as a SHA-256 thumbprint
    assert build_parser().parse_args(_kid_arguments(["retire", kid])).kid == kid
    args = build_parser().parse_args(_kid_arguments(["rotate-keys", "--activate", kid]))
    assert args.activate == kid

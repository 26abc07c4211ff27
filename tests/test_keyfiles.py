"""Key material: created on first run owner-only, unsafe permissions refused, env keys used."""

from __future__ import annotations

import base64
import multiprocessing
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.crypto.fields import (
    DecryptionError,
    FieldCipher,
    LookupHasher,
    load_data_key,
)
from license_server.crypto.keyfiles import KeyFileError, write_secret
from license_server.crypto.keystore import load_keyring
from license_server.crypto.signing import jwk_thumbprint


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_first_run_creates_owner_only_keys(tmp_path):
    keys = tmp_path / "keys"
    keyring = load_keyring(keys)
    load_data_key(keys)
    assert mode(keys) == 0o700
    assert mode(keys / "signing") == 0o700
    assert mode(keys / "data.key") == 0o600
    (pem,) = (keys / "signing").glob("*.pem")
    assert mode(pem) == 0o600
    # Loading again reuses the same keys.
    assert load_keyring(keys).active.kid == keyring.active.kid
    assert load_data_key(keys) == load_data_key(keys)


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604])
def test_readable_key_files_are_refused(tmp_path, file_mode):
    load_keyring(tmp_path)
    load_data_key(tmp_path)
    (pem,) = (tmp_path / "signing").glob("*.pem")
    os.chmod(pem, file_mode)
    with pytest.raises(KeyFileError, match="readable by other users"):
        load_keyring(tmp_path)
    os.chmod(tmp_path / "data.key", file_mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_data_key(tmp_path)


def test_keys_from_the_environment(tmp_path):
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pem = b"".join(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for key in (first, second)
    ).decode()
    keyring = load_keyring(tmp_path / "unused", pem)
    raw = second.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert keyring.active.kid == jwk_thumbprint(raw)  # the last PEM block signs
    assert len(keyring.keys) == 2
    assert not (tmp_path / "unused").exists()  # nothing written when keys come from env
    data_key = base64.b64encode(os.urandom(32)).decode()
    assert len(load_data_key(tmp_path / "unused", data_key)) == 32


@pytest.mark.parametrize(
    "bad", ["not a pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"]
)
def test_bad_environment_signing_keys(tmp_path, bad):
    with pytest.raises(KeyFileError):
        load_keyring(tmp_path, bad)


@pytest.mark.parametrize("bad", ["short", base64.b64encode(b"x" * 16).decode()])
def test_bad_data_key(tmp_path, bad):
    with pytest.raises(KeyFileError, match="32 random bytes"):
        load_data_key(tmp_path, bad)


def test_jwk_thumbprint_matches_rfc_8037_example():
    # RFC 8037 appendix A.3: thumbprint of the example Ed25519 key.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert jwk_thumbprint(x) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_field_encryption_is_bound_to_its_column():
    key = os.urandom(32)
    cipher = FieldCipher(key)
    blob = cipher.encrypt("licenses", "key_encrypted", "SECRET")
    assert b"SECRET" not in blob
    assert cipher.decrypt("licenses", "key_encrypted", blob) == "SECRET"
    with pytest.raises(DecryptionError):
        cipher.decrypt("products", "whmcs_secret", blob)  # moved to another column
    with pytest.raises(DecryptionError):
        cipher.decrypt("licenses", "key_encrypted", blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(DecryptionError):
        FieldCipher(os.urandom(32)).decrypt("licenses", "key_encrypted", blob)


def test_lookup_hashes_are_keyed_and_separated_by_purpose():
    key = os.urandom(32)
    hasher = LookupHasher(key)
    assert hasher.hash("license-key", "A") == hasher.hash("license-key", "A")
    assert hasher.hash("license-key", "A") != hasher.hash("api-key", "A")
    assert hasher.hash("license-key", "A") != LookupHasher(os.urandom(32)).hash("license-key", "A")


def test_leftover_temporary_files_do_not_break_a_start(tmp_path):
    # What a crash between creating and linking leaves behind, under the old fixed names and
    # under unique ones: neither may stop the next start from creating the keys.
    signing = tmp_path / "signing"
    signing.mkdir(parents=True, mode=0o700)
    for leftover in (
        tmp_path / ".data.key.tmp",
        tmp_path / ".data.key.k2j4h1.tmp",
        signing / ".1700000000000000000.pem.tmp",
        signing / ".1700000000000000000.pem.x9q.tmp",
    ):
        leftover.write_bytes(b"half a key")
        leftover.chmod(0o600)
    keyring = load_keyring(tmp_path)
    assert len(load_data_key(tmp_path)) == 32
    assert [p.name for p in signing.glob("*.pem")] == [f"{keyring.active.created_at}.pem"]
    assert load_keyring(tmp_path).active.kid == keyring.active.kid


def test_write_secret_first_writer_wins(tmp_path):
    target = tmp_path / "data.key"
    assert write_secret(target, b"first\n") is True
    assert write_secret(target, b"second\n") is False
    assert target.read_bytes() == b"first\n"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["data.key"]  # no temporary file left


def _first_start(keys_dir, barrier, results) -> None:
    barrier.wait()  # all processes start creating keys at the same moment
    try:
        kid = load_keyring(keys_dir).active.kid
        results.put((kid, load_data_key(keys_dir)))
    except BaseException as exc:  # reported to the test instead of lost in the child
        results.put(("error", repr(exc)))


@pytest.mark.parametrize("round_", range(4))
def test_processes_starting_together_create_one_set_of_keys(tmp_path, round_):
    processes = 4
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    keys_dir = tmp_path / "keys"
    children = [
        context.Process(target=_first_start, args=(keys_dir, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert all(kid != "error" for kid, _ in outcomes), outcomes
    assert len({kid for kid, _ in outcomes}) == 1  # everyone uses the same signing key
    assert len({data_key for _, data_key in outcomes}) == 1
    assert len(list((keys_dir / "signing").glob("*.pem"))) == 1

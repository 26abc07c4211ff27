"""License keys: signed, offline-checkable, copy-safe; forgeries fail without the database."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from license_server.crypto.keystore import KeyStore, load_keyring
from license_server.crypto.signing import Keyring, SigningKey
from license_server.licensing.license_keys import (
    MAX_LICENSE_ID,
    KeyRejected,
    looks_signed,
    make_license_key,
    parse_signed_key,
)


def fresh_keyring(created: int = 1) -> Keyring:
    return Keyring([SigningKey.from_private(Ed25519PrivateKey.generate(), created)])


KEYRING = fresh_keyring()


def test_round_trip():
    key = make_license_key(KEYRING, "ACME", 123456789)
    parsed = parse_signed_key(KEYRING, key)
    assert parsed.license_id == 123456789
    assert parsed.prefix == "ACME"
    assert parsed.kid == KEYRING.active.kid
    assert parsed.text == key


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True),
    license_id=st.integers(min_value=1, max_value=MAX_LICENSE_ID),
)
def test_any_key_round_trips_and_is_copy_safe(prefix, license_id):
    key = make_license_key(KEYRING, prefix, license_id)
    assert len(key) <= 128
    assert re.fullmatch(r"[A-Z0-9-]+", key)  # survives unencoded in a form body or URL
    assert parse_signed_key(KEYRING, key).license_id == license_id


def test_copy_mistakes_are_folded():
    key = make_license_key(KEYRING, "ACME", 42)
    prefix, body = key.split("-")
    confused = body.lower().replace("0", "o").replace("1", "l")
    parsed = parse_signed_key(KEYRING, f"  {prefix.lower()}-{confused}\n")
    assert parsed.text == key


@pytest.mark.parametrize("position", [5, 10, 60, 118])
def test_tampered_key_is_rejected(position):
    key = make_license_key(KEYRING, "ACME", 42)
    replacement = "A" if key[position] != "A" else "B"
    tampered = key[:position] + replacement + key[position + 1 :]
    with pytest.raises(KeyRejected) as info:
        parse_signed_key(KEYRING, tampered)
    assert info.value.reason in ("bad_signature", "malformed")


def test_prefix_swapped_to_another_product_is_rejected():
    key = make_license_key(KEYRING, "ACME", 42)
    with pytest.raises(KeyRejected) as info:
        parse_signed_key(KEYRING, "OTHER-" + key.split("-")[1])
    assert info.value.reason == "bad_signature"


def test_key_signed_by_another_key_is_rejected():
    forged = make_license_key(fresh_keyring(), "ACME", 42)
    with pytest.raises(KeyRejected) as info:
        parse_signed_key(KEYRING, forged)
    assert info.value.reason == "bad_signature"


def test_non_canonical_padding_is_rejected():
    key = make_license_key(KEYRING, "ACME", 42)
    last = key[-1]
    # The final character carries two padding bits; flipping one must not verify.
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    sibling = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(KeyRejected) as info:
        parse_signed_key(KEYRING, key[:-1] + sibling)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "text",
    ["ACME-" + "U" * 114, "ACME-" + "0" * 113 + "!", "ACME-" + "0" * 101],
)
def test_malformed_signed_shapes_are_rejected(text):
    with pytest.raises(KeyRejected):
        parse_signed_key(KEYRING, text)


@pytest.mark.parametrize("legacy", ["Leased-5c6d2f1a9b", "abc123", "MYMOD-12345", ""])
def test_legacy_keys_are_not_signed_shapes(legacy):
    assert not looks_signed(legacy)


def test_keys_survive_rotation(tmp_path):
    keyring = load_keyring(tmp_path)
    old_key = make_license_key(keyring, "ACME", 7)
    store = KeyStore(tmp_path)
    store.activate(store.rotate().kid)
    rotated = load_keyring(tmp_path)
    assert rotated.active.kid != keyring.active.kid
    assert parse_signed_key(rotated, old_key).kid == keyring.active.kid
    new_key = make_license_key(rotated, "ACME", 8)
    assert parse_signed_key(rotated, new_key).kid == rotated.active.kid
    with pytest.raises(KeyRejected):
        parse_signed_key(keyring, new_key)  # the old keyring never knew the new key


def test_prefix_and_id_are_validated():
    with pytest.raises(ValueError):
        make_license_key(KEYRING, "acme-x", 1)
    with pytest.raises(ValueError):
        make_license_key(KEYRING, "ACME", MAX_LICENSE_ID + 1)

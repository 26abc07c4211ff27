"""Staff passwords: Argon2id PHC strings, hostile input, rehash, dummy hash, policy.

Real Argon2id with the default parameters costs ~0.2 s, so only two tests use them (the
defaults and the interoperability with cryptography's own PHC functions); the rest hash with
`LOW`, passed explicitly, or count derivations with a spy instead of timing them.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from license_server.staff import passwords
from license_server.staff.passwords import (
    DEFAULT_PARAMS,
    DUMMY_HASH,
    MAX_PASSWORD_LENGTH,
    Argon2Params,
    check_password,
    common_passwords,
    hash_password,
    hash_password_async,
    needs_rehash,
    password_expired,
    verify_password,
    verify_password_async,
    verify_password_or_dummy,
    verify_password_or_dummy_async,
)

LOW = Argon2Params(time_cost=1, memory_cost_kib=64, parallelism=1)
GOOD = "Tr0ub4dor&3-Horse"
PHC_SHAPE = re.compile(
    r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def derivations(monkeypatch):
    """Records the parameters and thread of every Argon2id derivation."""
    calls: list[tuple[Argon2Params, int]] = []
    real = passwords._derive

    def spy(params, salt, secret):
        calls.append((params, threading.get_ident()))
        return real(params, salt, secret)

    monkeypatch.setattr(passwords, "_derive", spy)
    return calls


def test_defaults_are_the_seeds_and_interoperate_with_cryptography():
    assert DEFAULT_PARAMS == Argon2Params(3, 65536, 4, 16, 32)
    phc = hash_password(GOOD)
    m, t, p, salt, digest = PHC_SHAPE.fullmatch(phc).groups()
    assert (m, t, p) == ("65536", "3", "4")
    assert len(b64(salt)) == 16 and len(b64(digest)) == 32
    assert "=" not in salt + digest  # unpadded, as the PHC string format says
    assert not needs_rehash(phc)
    Argon2id.verify_phc_encoded(GOOD.encode(), phc)  # raises if cryptography disagrees
    assert verify_password(phc, GOOD)


def test_reads_what_cryptography_writes():
    kdf = Argon2id(salt=b"0123456789abcdef", length=32, iterations=1, lanes=1, memory_cost=64)
    phc = kdf.derive_phc_encoded(GOOD.encode())
    assert verify_password(phc, GOOD)
    assert not verify_password(phc, GOOD + "x")


def test_round_trip_wrong_password_and_fresh_salts():
    first, second = hash_password(GOOD, params=LOW), hash_password(GOOD, params=LOW)
    assert first != second  # a new random salt every time
    assert verify_password(first, GOOD) and verify_password(second, GOOD)
    for wrong in ("", GOOD.lower(), GOOD[:-1], GOOD + " ", " " + GOOD):
        assert not verify_password(first, wrong)


def test_the_same_password_typed_differently_verifies_after_nfkc():
    phc = hash_password("Caf\u00e9-Password-1", params=LOW)  # composed é
    assert verify_password(phc, "Cafe\u0301-Password-1")  # e + combining acute
    phc = hash_password("\ufb01le-Password-12", params=LOW)  # the "fi" ligature
    assert verify_password(phc, "file-Password-12")


def test_nul_bytes_are_hashed_not_truncated():
    phc = hash_password("abc\x00defghijkl", params=LOW)
    assert verify_password(phc, "abc\x00defghijkl")
    assert not verify_password(phc, "abc")


MALFORMED = [
    "",
    "$argon2id$",
    "not a hash",
    "$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2d$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=16$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$" + "A" * 43,  # padded
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZh$" + "A" * 43,  # non-canonical
    "$argon2id$v=19$m=64,t=1,p=1$MDEy-zQ1Njc4OWFiY2RlZg$" + "A" * 43,  # url-safe alphabet
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43 + "\n",
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43 + "$x",
    "$argon2id$v=19$m=64,t=1,p=1,x=2$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=064,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=4,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,  # m < 8p
    # A tampered row asking for 4 TiB, 10^9 passes or 2^24 lanes: refused before any work.
    "$argon2id$v=19$m=4294967295,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=64,t=1000000000,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=1048576,t=1,p=16777215$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=64,t=1,p=1$MDEy$" + "A" * 43,  # 3-byte salt
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAA",  # 3-byte hash
    "$argon2id$v=19$m=64,t=1,p=1$\u0661\u0662MzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43 + "\ud800",
    None,
    b"$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + b"A" * 43,
    42,
]


@pytest.mark.parametrize("phc", MALFORMED)
def test_a_malformed_phc_string_is_false_never_an_exception(phc, derivations):
    assert verify_password(phc, GOOD) is False
    assert needs_rehash(phc) is True
    assert derivations == []  # refused before any hashing


@pytest.mark.parametrize(
    "password", [None, b"Tr0ub4dor&3-Horse", 12345, ["x"], "a\ud800bcdefghijkl"]
)
def test_wrong_types_and_unencodable_passwords(password, derivations):
    phc = hash_password(GOOD, params=LOW)
    derivations.clear()
    assert verify_password(phc, password) is False
    assert verify_password_or_dummy(None, password) is False
    assert derivations == []
    with pytest.raises((TypeError, ValueError)):
        hash_password(password, params=LOW)


def test_a_huge_password_is_refused_before_hashing(derivations):
    """The input cap is checked before NFKC and Argon2: 1 MB costs nothing."""
    huge = "A" * 1_000_000
    assert verify_password(DUMMY_HASH, huge) is False
    assert verify_password_or_dummy(None, huge) is False
    with pytest.raises(ValueError):
        hash_password(huge, params=LOW)
    assert derivations == []
    assert check_password(huge, email=None, name=None) == [
        f"Use at most {MAX_PASSWORD_LENGTH} characters."
    ]


def test_the_longest_accepted_password_still_verifies():
    longest = ("Aa1!" + "e\u0301" * 3) * 16  # 160 code points, 128 after NFKC composes
    assert check_password(longest, email=None, name=None) == []
    assert verify_password(hash_password(longest, params=LOW), longest)


def test_needs_rehash_when_the_parameters_are_raised():
    phc = hash_password(GOOD, params=LOW)
    assert not needs_rehash(phc, params=LOW)
    assert needs_rehash(phc)  # LOW is below the defaults
    for field in ("time_cost", "memory_cost_kib", "parallelism", "salt_len", "hash_len"):
        stronger = replace(LOW, **{field: getattr(LOW, field) * 2})
        assert needs_rehash(phc, params=stronger), field
    assert not needs_rehash(DUMMY_HASH)
    assert needs_rehash(DUMMY_HASH, params=replace(DEFAULT_PARAMS, memory_cost_kib=131072))
    # Stronger than today's parameters is not a reason to rehash.
    assert not needs_rehash(hash_password(GOOD, params=replace(LOW, time_cost=4)), params=LOW)


def test_unknown_account_costs_one_full_default_derivation(derivations):
    assert verify_password_or_dummy(None, GOOD) is False
    assert [params for params, _ in derivations] == [DEFAULT_PARAMS]
    assert PHC_SHAPE.fullmatch(DUMMY_HASH)


def test_dummy_follows_the_parameters_and_never_matches(derivations):
    assert verify_password_or_dummy(None, GOOD, params=LOW) is False
    assert [params for params, _ in derivations] == [LOW]
    phc = hash_password(GOOD, params=LOW)
    assert verify_password_or_dummy(phc, GOOD, params=LOW) is True


async def test_async_wrappers_hash_off_the_event_loop():
    """In another process: cryptography's Argon2 holds the GIL, so a thread would stall the
    event loop (bench/login_storm.py)."""
    from license_server.staff.passwords import _off_loop

    assert await _off_loop(os.getpid) != os.getpid()
    phc = await hash_password_async(GOOD, params=LOW)
    assert await verify_password_async(phc, GOOD)
    assert not await verify_password_async(phc, "wrong")
    assert not await verify_password_or_dummy_async(None, GOOD, params=LOW)
    with pytest.raises(ValueError, match="too long"):  # errors come back as they are
        await hash_password_async("x" * 10_000)


# --- policy ---------------------------------------------------------------------------------


def policy(
    password: str, email: str | None = "jane.doe@example.com", name: str | None = "Jane Doe"
):
    return check_password(password, email=email, name=name)


@pytest.mark.parametrize(
    "password",
    [
        GOOD,
        "Ünïcödé-Pässwörd-1",
        "Zq8#vN2!pL5@wR",
        "correct Horse battery 9 staple",
        "Ω-Δelta-Ψsi-42x",
    ],
)
def test_strong_passwords_pass(password):
    assert policy(password) == []


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("Aa1!aaaaaaa", "at least 12"),  # 11
        ("Aa1!" + "e\u0301" * 4 + "aaa", "at least 12"),  # 15 code points, 11 after NFKC
        ("Aa1!" + "x" * 125, "at most 128"),
        ("aaaaaaaaaaa1!", "upper-case"),
        ("AAAAAAAAAAA1!", "lower-case"),
        ("Aaaaaaaaaaaa!", "a digit"),
        ("Aaaaaaaaaaaa\u0661!", None),  # an Arabic-Indic digit is a digit: accepted
        ("Aaaaaaaaaaaa1", "special character"),
        ("Tr0ub4dor&3\x00Horse", "printable"),
        ("Tr0ub4dor&3\x1bHorse", "printable"),
        ("Tr0ub4dor&3\ud800Horse", "printable"),
        ("Jane.Doe.2024!", "name or e-mail"),
        ("My-DOE-Secret-9", "name or e-mail"),
        ("xJANE.DOEx-1234", "name or e-mail"),
        ("P@ssw0rd2024!", "common password with digits"),
        ("Password2024!", "common password with digits"),
        ("!!Summer2024!!", "common password with digits"),
        ("1qaz2wsx3edc", "too common"),
        ("QWERTYUIOP12", "too common"),
    ],
)
def test_refused_passwords_say_why(password, words):
    problems = policy(password)
    if words is None:
        assert problems == []
    else:
        assert any(words in problem for problem in problems), problems


def test_a_common_password_is_refused_by_the_list_alone():
    """Fails if the list check were removed: this password passes every other rule."""
    assert policy("P@ssw0rd2024!") == [
        "This password is a common password with digits or symbols added."
    ]
    assert "password" in common_passwords()


def test_short_name_fragments_do_not_forbid_everything():
    assert check_password(GOOD, email="al@example.com", name="Al Bo") == []
    assert check_password(GOOD, email=None, name=None) == []
    assert check_password(GOOD, email="", name="") == []
    assert check_password("Horse-Tr0ub4dor&3", email="x@example.com", name="Horse") != []


def test_the_common_password_list_is_the_shipped_one_loaded_once():
    words = common_passwords()
    assert words is common_passwords()
    assert 10_000 <= len(words) <= 50_000
    assert {"password", "123456", "qwerty", "iloveyou"} <= words
    assert all(word == word.casefold() for word in words)


def test_check_password_rejects_non_strings():
    with pytest.raises(TypeError):
        check_password(None, email=None, name=None)  # type: ignore[arg-type]


def test_password_expiry_is_off_unless_configured():
    changed = datetime(2026, 1, 1, tzinfo=UTC)
    assert not password_expired(changed, changed + timedelta(days=10_000), None)
    assert not password_expired(changed, changed + timedelta(days=10_000), 0)
    assert not password_expired(changed, changed + timedelta(days=89, hours=23), 90)
    assert password_expired(changed, changed + timedelta(days=90), 90)

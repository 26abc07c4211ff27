"""Staff TOTP (RFC 6238 test vectors, window, single use), the QR code, recovery codes.

No sleeping: `now` is passed in, and the one-time store's clock is driven by the test.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from license_server.crypto.fields import LookupHasher
from license_server.one_time import MemoryOneTimeValues, OneTimeStoreUnavailable
from license_server.staff.totp import (
    RECOVERY_CODE_BITS,
    CodeCheck,
    check_code,
    hash_recovery_code,
    match_recovery_code,
    new_recovery_codes,
    new_secret,
    normalise_recovery_code,
    provisioning_uri,
    qr_svg,
    secret_from_text,
    secret_to_text,
    verify_code,
)

# RFC 6238 Appendix B: the SHA-1 seed and its 8-digit codes. An n-digit HOTP value is the same
# 31-bit number mod 10^n (RFC 4226 5.3), so the 6-digit code is the last six digits.
RFC_SECRET = b"12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
T0 = 1234567890  # a time inside step 41152263, whose code is 005924
CODE_T0 = "005924"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingOnce(MemoryOneTimeValues):
    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[str, str, float]] = []

    async def claim(self, namespace: str, value: str, ttl_seconds: float) -> bool:
        self.claims.append((namespace, value, ttl_seconds))
        return await super().claim(namespace, value, ttl_seconds)


class DownOnce:
    async def claim(self, namespace: str, value: str, ttl_seconds: float) -> bool:
        raise OneTimeStoreUnavailable("redis down")

    async def close(self) -> None: ...


async def check(code, now, once, account_id=7, secret=RFC_SECRET):
    return await check_code(secret, code, now=now, once=once, account_id=account_id)


@pytest.mark.parametrize(("unix_time", "code8"), RFC_VECTORS)
async def test_rfc_6238_sha1_vectors(unix_time, code8):
    once = MemoryOneTimeValues()
    assert await verify_code(RFC_SECRET, code8[-6:], now=unix_time, once=once, account_id=1)
    # The eight-digit form is not a six-digit code.
    assert await check(code8, unix_time, once) is CodeCheck.MALFORMED


async def test_one_step_either_side_and_no_further():
    for offset in (-30, 0, 30):
        assert await check(CODE_T0, T0 + offset, MemoryOneTimeValues()) is CodeCheck.ACCEPTED
    for offset in (-60, 60, 3600):
        assert await check(CODE_T0, T0 + offset, MemoryOneTimeValues()) is CodeCheck.WRONG


async def test_a_replayed_code_is_refused_on_every_instance_sharing_the_store():
    once = RecordingOnce()
    assert await verify_code(RFC_SECRET, CODE_T0, now=T0, once=once, account_id=7)
    assert not await verify_code(RFC_SECRET, CODE_T0, now=T0, once=once, account_id=7)
    assert await check(CODE_T0, T0 + 1, once) is CodeCheck.REPLAYED
    assert await check(CODE_T0, T0 + 30, once) is CodeCheck.REPLAYED  # next step, same code
    step = T0 // 30
    assert once.claims[0][:2] == ("totp", f"7:{step}")
    # Another account is another key (its secret would differ; same one here to show the key).
    assert await check(CODE_T0, T0, once, account_id=8) is CodeCheck.ACCEPTED
    # The next step's code is a new code and is accepted.
    next_code = TOTP(RFC_SECRET, 6, SHA1(), 30).generate(T0 + 30).decode()
    assert next_code != CODE_T0
    assert await check(next_code, T0 + 30, once) is CodeCheck.ACCEPTED
    assert await check(next_code, T0 + 30, once) is CodeCheck.REPLAYED


async def test_the_claim_lasts_as_long_as_the_code_is_accepted():
    """Accepted at the earliest moment of its window, replayed at the last: still refused.
    Fails if the claim's lifetime were shorter than the window."""
    step = T0 // 30
    clock = Clock(float((step - 1) * 30))  # first second of step - 1: the window opens
    once = MemoryOneTimeValues(clock=clock)
    assert await check(CODE_T0, clock.now, once) is CodeCheck.ACCEPTED
    clock.now = (step + 2) * 30 - 0.001  # last instant of step + 1: the window closes
    assert await check(CODE_T0, clock.now, once) is CodeCheck.REPLAYED
    clock.now = (step + 2) * 30
    assert await check(CODE_T0, clock.now, once) is CodeCheck.WRONG


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        " 005924",
        "005924 ",
        "005924\n",
        "005 924",
        "005-924",
        "\u0660\u0660\u0665\u0669\u0662\u0664",  # Arabic-Indic digits of 005924
        "\uff10\uff10\uff15\uff19\uff12\uff14",  # full-width digits
        "00592a",
        "+05924",
        "\x005924",
        None,
        5924,
        b"005924",
        ["005924"],
    ],
)
async def test_anything_but_six_ascii_digits_is_refused_before_any_claim(code):
    once = RecordingOnce()
    assert await check(code, T0, once) is CodeCheck.MALFORMED
    assert await verify_code(RFC_SECRET, code, now=T0, once=once, account_id=7) is False
    assert once.claims == []


async def test_a_wrong_code_claims_nothing():
    once = RecordingOnce()
    assert await check("123456" if CODE_T0 != "123456" else "654321", T0, once) is CodeCheck.WRONG
    assert once.claims == []


async def test_store_down_fails_closed():
    with pytest.raises(OneTimeStoreUnavailable):
        await check(CODE_T0, T0, DownOnce())


def test_secrets_are_20_random_bytes_with_a_text_form():
    first, second = new_secret(), new_secret()
    assert len(first) == 20 and first != second
    text = secret_to_text(first)
    assert re.fullmatch(r"[A-Z2-7]{32}", text)
    assert secret_from_text(text) == first


def test_provisioning_uri_is_what_authenticator_apps_read():
    secret = new_secret()
    uri = provisioning_uri(secret, "jane@example.com", "Acme Licenses")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Acme Licenses:jane@example.com"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query == {
        "secret": secret_to_text(secret),
        "issuer": "Acme Licenses",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }


@pytest.mark.parametrize(("account", "issuer"), [("a:b", "Acme"), ("a", "Ac:me"), ("", "Acme")])
def test_provisioning_uri_refuses_a_colon_in_the_label(account, issuer):
    with pytest.raises(ValueError):
        provisioning_uri(new_secret(), account, issuer)


def test_qr_svg_is_safe_to_inline():
    uri = provisioning_uri(new_secret(), "jane@example.com", "Acme Licenses")
    svg = qr_svg(uri, title='Scan <script>alert("x")</script> & go')
    assert svg.startswith('<svg role="img" ') and svg.endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg.upper()
    assert "<script" not in svg and "href" not in svg and "data:" not in svg
    assert re.findall(r"https?://[^\"]*", svg) == ["http://www.w3.org/2000/svg"]  # xmlns only
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.get("viewBox")
    assert root.find(f"{ns}title").text == 'Scan <script>alert("x")</script> & go'
    assert {element.tag for element in root.iter()} <= {
        f"{ns}{tag}" for tag in ("svg", "title", "g", "path")
    }
    assert "<title>QR code for your authenticator app</title>" in qr_svg(uri)


# --- recovery codes ---------------------------------------------------------------------------

CODE_SHAPE = re.compile(r"[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}")


@pytest.fixture
def hasher() -> LookupHasher:
    return LookupHasher(os.urandom(32))


def test_recovery_codes_are_readable_and_strong():
    codes = new_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(CODE_SHAPE.fullmatch(code) for code in codes)
    assert RECOVERY_CODE_BITS >= 60
    assert len(new_recovery_codes(3)) == 3
    for n in (0, -1, 101):
        with pytest.raises(ValueError):
            new_recovery_codes(n)


def test_recovery_codes_match_however_they_are_typed(hasher):
    codes = new_recovery_codes()
    hashes = [hash_recovery_code(code, hasher) for code in codes]
    assert all(len(stored) == 48 for stored in hashes)
    assert hash_recovery_code(codes[0], hasher) != hashes[0]  # salted
    for index, code in enumerate(codes):
        assert match_recovery_code(code, hashes, hasher) == index
    code = codes[4]
    for typed in (
        code.upper(),
        code.replace("-", ""),
        code.replace("-", " "),
        f"  {code[:4]} {code[5:9]}\u2013{code[10:]} ",
        code.replace("0", "O").replace("1", "l"),
    ):
        assert match_recovery_code(typed, hashes, hasher) == 4, typed


def test_recovery_codes_refuse_the_wrong_code_key_and_input(hasher):
    codes = new_recovery_codes(2)
    hashes = [hash_recovery_code(code, hasher) for code in codes]
    assert match_recovery_code("0000-0000-0000", hashes, hasher) is None
    # Without the server key the stored hashes match nothing (a database dump alone is useless).
    assert match_recovery_code(codes[0], hashes, LookupHasher(os.urandom(32))) is None
    assert match_recovery_code(codes[0], [], hasher) is None
    assert match_recovery_code(codes[0], [b"short", None, hashes[0]], hasher) == 2
    arabic = "\u0661\u0662\u0663\u0664-\u0665\u0666\u0667\u0668-\u0669\u0660\u0661\u0662"
    for bad in (
        None,
        b"abcd-abcd-abcd",
        "",
        "uuuu-uuuu-uuuu",
        codes[0] + "a",
        "x" * 10_000,
        arabic,
    ):
        assert match_recovery_code(bad, hashes, hasher) is None, bad
        assert normalise_recovery_code(bad) is None
    with pytest.raises(ValueError):
        hash_recovery_code("not a code", hasher)

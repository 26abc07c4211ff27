"""One definition of a domain: the clients normalise exactly like the server (issue #11, item 9).

The server's rules live in license_server/licensing/domains.py. The Python client keeps its own
copy (it is standalone on purpose) and the PHP client its own port; a client that disagrees
with the server rejects its own genuine local key, or binds a site to the wrong name. The
corpus is every string in the server's domain tests (read from their parametrize marks, so
new cases join automatically) plus generated hosts: schemes, userinfo, ports, bracketed and
bare IPv6, IPv4-mapped IPv6, short and odd IPv4 forms, queries, fragments, trailing dots,
upper case, "www.", IDNA/Unicode, empty and overlong labels. Each result must be equal:
the same canonical text, or both refuse.

The PHP client's built-in IDNA knows a fixed repertoire of scripts (see its idnToAscii()):
inside it PHP must equal the server; outside it (EXOTIC below) it may refuse a name, but it
must never produce a different one.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from license_server import client
from license_server.licensing import domains
from tests import test_domains

ROOT = Path(__file__).resolve().parent.parent
PHP = shutil.which("php")
PHP_SCRIPT = ROOT / "tests" / "php" / "normalise_domains.php"


def server_test_strings() -> list[str]:
    """Every string parameter of the server's domain tests."""
    found: list[str] = []
    for name in dir(test_domains):
        for mark in getattr(getattr(test_domains, name), "pytestmark", []):
            if mark.name != "parametrize":
                continue
            for values in mark.args[1]:
                values = values if isinstance(values, tuple) else (values,)
                found.extend(value for value in values if isinstance(value, str))
    return found


HOSTS = [
    "example.com", "Shop.Example.COM", "www.example.com", "www.www.shop.co.uk", "www.com", "www",
    "localhost", "a.b.c.d.e.f", "r3---sn-abc.googlevideo.com", "ab--cd.com",
    "xn--bcher-kva.example", "XN--BCHER-KVA.example", "xn--bcher-kva", "xn--a.com", "xn--.com",
    "xn---bbk.com", "xn--zz-.com",
    "xn--ls8h.la", "xn--strae-oqa.de", "xn--mxa8ab.gr", "1.2.3.4", "127.0.0.1", "0.0.0.0",
    "255.255.255.255", "256.1.1.1", "127.1", "0x7f.1", "0x7f.0.0.1", "0177.0.0.1", "01.2.3.4",
    "1.2.3", "1.2.3.4.5", "2130706433", "1e1.com", "::1", "::", "2001:db8::1",
    "2001:DB8:0:0:0:0:0:1", "2001:db8:0:0:1:0:0:1", "1:0:0:2:0:0:0:3", "1::2:3:4:5:6:7",
    "::ffff:1.2.3.4", "::FFFF:7f00:1", "::ffff:01.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4",
    "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", ":::", "1::2::3", "::g", "12345::", "a" * 63 + ".com",
    "a" * 64 + ".com", ".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 4),
    "a..b.com", ".com", "com.", "-a.com", "a-.com", "a_b.com", "exa mple.com", "*.example.com",
    "exam!ple.com", "", " ", ".", "123", "example.123", "123.example", "e\x00x.com",
]  # fmt: skip
UNICODE_HOSTS = [
    "bücher.example", "BÜCHER.de", "straße.de", "STRAẞE.de", "ÀÉÎÕÜÿ.fr", "Ÿ.fr", "çà.fr",
    "ĳssel.nl", "Ĳssel.nl", "ŀl.cat", "Ŀl.cat", "ŀa.cat", "col·lecció.cat", "l·.cat",
    "ŉ.com", "ʼn.com", "ΑΣʼ.gr", "İstanbul.tr", "ıstanbul.tr", "ſtadt.de", "ĸ.gl", "ΑΘΗΝΑ.gr",
    "αθηνα.gr", "ΟΔΟΣ.gr",
    "gr.ΟΔΟΣ", "ΟΔΟΣ", "ΑΣ\u00ad.gr", "ΑΣ·Α.gr", "ΑΣＡ.gr", "ΑΣ－x.gr", "ΑΣ。gr", "ΑΣ．gr",
    "ΑΣ:80", "Σ.gr", "ς.gr", "ΐ.gr", "Ά.gr", "москва.рф", "ПРИМЕР.РФ", "ЁЖ.рф", "Ѐ.рф",
    "例え.テスト", "日本語.jp", "ひらがな.jp", "カタカナー.jp", "한국.kr", "ｅｘａｍｐｌｅ.com",
    "ＥＸＡＭＰＬＥ.com", "example。com", "example．com", "example｡com", "１.２.３.４",
    "１２７.０.０.１", "a\u00adb.com", "a\u200bb.com", "a\u2060b.com", "a\ufeffb.com",
    "a\ufe0fb.com", "\u00ad", "\u00ad.com", "ab--c\u00ad.com", "a\u200db.com", "\u200d.com",
    "☃.com", "☃\u200d.com", "ü" * 60 + ".de", "ü" * 20 + ".de", "ü-.de", "-ü.de", "üü--ü.de",
    "example。。com", "example。", "ü.com。", "ü.com。。", "bücher.xn--zckzah", "ü.xn--a.com",
]  # fmt: skip
# Unicode outside the PHP built-in repertoire: PHP may refuse these, never mis-map them.
EXOTIC = [
    "K.com", "µ.com", "ǆ.com", "ℌ.com", "e\u0301.com", "x\u0307.com", "ϗ.gr", "ӏ.ru",
    "١٢٣.com", "עברית.co.il", "مثال.eg", "हिन्दी.in", "क्\u200d.in", "ไทย.th", "々.jp",
    "ΑΣ\u0301.gr", "Ω\u0345.gr", "ⓐ.com", "ﬁ.com", "a\u3000b.com", "\u2163.com",
]  # fmt: skip
DECORATIONS = [
    "{}", "http://{}/", "HTTPS://user:pw@{}:8443/p?q=1#f", "{}:80", "{}:", "{}:99999",
    "{}:0080", "{}.", "{}..", "{}?x=1", "{}#frag", "//{}", "[{}]", "[{}]:443", "[{}", " {}\t",
    "\u00a0{}\u3000", "www.{}", "WWW.www.{}", "ftp+ssh://{}", "user@{}", "{}/http://evil.com",
    "{}\\x", "{}%20",
]  # fmt: skip


def generated(hosts: list[str]) -> list[str]:
    return [pattern.format(host) for host, pattern in itertools.product(hosts, DECORATIONS)]


def random_hosts(count: int) -> list[str]:
    """Deterministic noise: short strings from an alphabet of delimiters, digits and letters."""
    rng = random.Random(11)
    alphabet = [*"abcxyzw0179.-:[]@/?#%_ ", "ü", "Σ", "。", "\u00ad", "xn--", "www.", "::"]
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 14))) for _ in range(count)]


def every_repertoire_character() -> list[str]:
    """Each non-ASCII character the PHP client maps itself, in and around a label."""
    ranges = [
        (0xC0, 0x17F), (0x386, 0x3CE), (0x400, 0x45F), (0x3041, 0x3096), (0x30A1, 0x30FC),
        (0x4E00, 0x4E20), (0x9FF0, 0x9FFF), (0xAC00, 0xAC10), (0xFF01, 0xFF5E),
    ]  # fmt: skip
    chars = [chr(cp) for start, end in ranges for cp in range(start, end + 1)]
    return [form.format(c) for c in chars for form in ("x{}y.com", "{}.com", "www.{0}{0}.de")]


CORPUS = list(
    dict.fromkeys(
        server_test_strings()
        + generated(HOSTS + UNICODE_HOSTS)
        + random_hosts(3000)
        + every_repertoire_character()
    )
)
EXOTIC_CORPUS = list(dict.fromkeys(EXOTIC + generated(EXOTIC[:6])))


def server_result(raw: str) -> str | None:
    try:
        return domains.normalise_domain(raw)
    except domains.InvalidHost:
        return None


def client_result(raw: str) -> str | None:
    try:
        return client.normalise_domain(raw)
    except client.InvalidDomain:
        return None


def test_the_corpus_covers_the_server_tests_and_both_outcomes():
    assert "[::1]:8080" in CORPUS and "例え.テスト" in CORPUS and "fe80::1%eth0" in CORPUS
    outcomes = [server_result(raw) for raw in CORPUS]
    accepted = sum(result is not None for result in outcomes)
    assert accepted > 1000 and len(CORPUS) - accepted > 1000


def test_python_client_normalises_like_the_server():
    differences = {
        raw: (server_result(raw), client_result(raw))
        for raw in CORPUS + EXOTIC_CORPUS
        if server_result(raw) != client_result(raw)
    }
    assert differences == {}


def run_php(corpus: list[str], tmp_path: Path) -> list[str | None]:
    corpus_file = tmp_path / "corpus.json"
    corpus_file.write_text(json.dumps(corpus), encoding="utf-8")
    done = subprocess.run(
        [
            PHP or "php",
            "-d",
            "error_reporting=-1",
            "-d",
            "display_errors=stderr",
            PHP_SCRIPT,
            corpus_file,
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode(errors="replace")
    results = json.loads(done.stdout)
    assert len(results) == len(corpus)
    return results


def encodable(raw: str) -> bool:
    """PHP strings are bytes: a lone surrogate has no UTF-8 form to hand over."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.skipif(PHP is None, reason="needs php-cli")
def test_php_client_normalises_like_the_server(tmp_path):
    corpus = [raw for raw in CORPUS if encodable(raw)]
    exotic = [raw for raw in EXOTIC_CORPUS if encodable(raw)]
    results = run_php(corpus + exotic, tmp_path)
    differences = {
        raw: (server_result(raw), php)
        for raw, php in zip(corpus, results[: len(corpus)], strict=True)
        if server_result(raw) != php
    }
    assert differences == {}
    # Outside the built-in repertoire: refusing is allowed, a different name is not.
    wrong = {
        raw: (server_result(raw), php)
        for raw, php in zip(exotic, results[len(corpus) :], strict=True)
        if php is not None and php != server_result(raw)
    }
    assert wrong == {}

"""Tests for license_server.licensing.domains (bindings and domain rules)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from license_server.licensing.domains import (
    DevHostPatterns,
    InvalidDirectory,
    InvalidHost,
    directory_matches_rule,
    domain_matches_rule,
    ip_matches_rule,
    is_dev_host,
    local_host_kind,
    normalise_directory,
    normalise_domain,
    normalise_ip,
    parse_domain_rule,
    parse_ip_rule,
    pattern_host_base,
)

# --- normalise_domain --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("  example.com\t\n", "example.com"),
        ("EXAMPLE.Com", "example.com"),
        ("http://example.com", "example.com"),
        ("https://example.com", "example.com"),
        ("HTTPS://Example.COM", "example.com"),
        ("ftp+ssh://example.com", "example.com"),
        ("//example.com/x", "example.com"),
        ("example.com:8080", "example.com"),
        ("https://example.com:443/", "example.com"),
        ("https://shop.example.com/cart/index.php", "shop.example.com"),
        ("example.com?a=b", "example.com"),
        ("example.com#top", "example.com"),
        ("example.com/http://evil.com", "example.com"),  # only a leading scheme counts
        ("https://example.com/p?q=1#f", "example.com"),
        ("https://user:pa:ss@example.com:8443/x", "example.com"),
        ("user@example.com", "example.com"),
        ("example.com.", "example.com"),
        ("example.com..", "example.com"),
        ("example.com.:80", "example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("https://BÜCHER.example/", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("example。com", "example.com"),  # ideographic full stop (UTS #46 mapping)
        ("www.example.com", "example.com"),
        ("WWW.Example.COM.", "example.com"),
        ("https://www.shop.example.com:8443/", "shop.example.com"),
        ("www.www.example.com", "example.com"),
        ("www.com", "www.com"),
        ("www", "www"),
        ("wwwexample.com", "wwwexample.com"),
        ("sub.www.example.com", "sub.www.example.com"),
        ("localhost", "localhost"),
        ("localhost:8080", "localhost"),
        ("r3---sn-abc.googlevideo.com", "r3---sn-abc.googlevideo.com"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
        ("1.2.3.4", "1.2.3.4"),
        ("http://1.2.3.4:8080/x", "1.2.3.4"),
        ("１.２.３.４", "1.2.3.4"),  # full-width digits map to ASCII under UTS #46
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:8080", "::1"),
        ("http://[2001:DB8:0:0::1]:8080/path", "2001:db8::1"),
        ("2001:0db8:0000::0001", "2001:db8::1"),
        ("[::ffff:1.2.3.4]", "1.2.3.4"),
        ("::FFFF:192.168.0.1", "192.168.0.1"),
    ],
)
def test_normalise_domain(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected
    assert normalise_domain(expected) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "http://",
        ".",
        "...",
        "exa mple.com",
        "exa_mple.com",
        "*.example.com",
        "exa\x00mple.com",
        "a..b.com",
        ".example.com",
        "-example.com",
        "example-.com",
        "a" * 64 + ".com",
        ".".join(["a" * 63] * 4),  # 255 characters
        "example.123",
        "123",
        "1.2.3",
        "1.2.3.256",
        "01.2.3.4",
        "example.com:port",
        "example.com:",
        "example.com:99999",
        "[::1",
        "[::1]x",
        "[example.com]",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
        "exam!ple.com",
        "exa\\mple.com",
        "xn--.com",
        "xn--zz-.com",
        "☃\u200d.com",  # a joiner outside its allowed context (RFC 5892)
        "\u00ad",  # maps to nothing under UTS #46
    ],
)
def test_normalise_domain_rejects(raw: str) -> None:
    with pytest.raises(InvalidHost):
        normalise_domain(raw)


def test_invalid_host_message_names_the_problem() -> None:
    with pytest.raises(InvalidHost, match=r"^'exa mple\.com' is not a hostname or IP address"):
        normalise_domain("exa mple.com")


def test_invalid_host_message_is_short_for_huge_input() -> None:
    with pytest.raises(InvalidHost) as caught:
        normalise_domain("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_invalid_host_is_a_value_error() -> None:
    assert issubclass(InvalidHost, ValueError)


# --- normalise_ip ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:102:304]", "1.2.3.4"),
    ],
)
def test_normalise_ip(raw: str, expected: str) -> None:
    assert normalise_ip(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "example.com", "1.2.3.4:80", "[::1]:80", "1.2.3.256", "01.2.3.4", "fe80::1%eth0", "::g"],
)
def test_normalise_ip_rejects(raw: str) -> None:
    with pytest.raises(InvalidHost):
        normalise_ip(raw)


# --- is_dev_host -------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "shop.localhost",
        "test",
        "shop.test",
        "local",
        "mac-mini.local",
        "invalid",
        "a.b.invalid",
        "example",
        "shop.example",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.10",
        "fc00::1",
        "fd12:3456::1",
        "169.254.1.1",
        "fe80::1",
        "0.0.0.0",
        "::",
    ],
)
def test_is_dev_host(host: str) -> None:
    assert is_dev_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.org",
        "shop.example.com",
        "localhost.com",
        "test.com",
        "mytest",
        "8.8.8.8",
        "172.32.0.1",
        "192.169.0.1",
        "100.64.0.1",
        "2001:4860:4860::8888",
        "fe00::1",
    ],
)
def test_is_not_dev_host(host: str) -> None:
    assert not is_dev_host(host)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", "reserved name"),
        ("shop.test", "reserved name .test"),
        ("a.b.invalid", "reserved name .invalid"),
        ("127.0.0.1", "loopback address"),
        ("::1", "loopback address"),
        ("169.254.1.1", "link-local address"),
        ("0.0.0.0", "unspecified address"),
        ("10.0.0.5", "private address"),
        ("fd12:3456::1", "private address"),
        ("staging.shop.com", None),
        ("dev.x.org", None),
        ("8.8.8.8", None),
    ],
)
def test_local_host_kind_says_why(host: str, kind: str | None) -> None:
    assert local_host_kind(host) == kind


@pytest.mark.parametrize("host", ["staging.pirate-shop.com", "dev.pirate-two.net", "staging.x"])
def test_pattern_hosts_are_not_local(host: str) -> None:
    # A pattern alone no longer makes a host free: decision.py asks for a base of the license.
    assert not is_dev_host(host)


@pytest.mark.parametrize(
    ("host", "pattern", "expected"),
    [
        ("staging.shop.com", "staging.*", True),
        ("staging.a.b.com", "staging.*", True),
        ("stagingfoo.com", "staging.*", False),
        ("shop.staging.com", "staging.*", False),
        ("dev.x.org", "dev.*", True),
        ("devx.org", "dev.*", False),
        ("a.staging.example.net", "*.staging.example.net", True),
        ("a.b.staging.example.net", "*.staging.example.net", True),
        ("staging.example.net", "*.staging.example.net", False),
        ("xstaging.example.net", "*.staging.example.net", False),
        ("shop.com", "SHOP.COM.", True),
        ("shop1.com", "shop?.com", True),
        ("shop.com", "shop.com.evil", False),
    ],
)
def test_dev_host_patterns_match(host: str, pattern: str, expected: bool) -> None:
    assert (DevHostPatterns([pattern]).match(host) is not None) is expected


def test_dev_host_patterns_name_the_pattern_that_matched() -> None:
    patterns = DevHostPatterns((" Staging.* ", "qa.*", "dev.*"))
    assert patterns.match("qa.shop.com") == "qa.*"
    assert patterns.match("staging.shop.com") == "staging.*"
    assert patterns.match("dev.qa.shop.com") == "dev.*"
    assert patterns.match("shop.com") is None


@pytest.mark.parametrize("patterns", [(), ("",), ("  ", ".")])
def test_no_dev_host_patterns_match_nothing(patterns: tuple[str, ...]) -> None:
    assert DevHostPatterns(patterns).match("staging.shop.com") is None
    assert DevHostPatterns(patterns).match("") is None


@pytest.mark.parametrize("pattern", ["[", "a[b", "(", "\\", "*[", "[!]]", "(?P<p0>x)", "é.*"])
def test_dev_host_patterns_are_globs_not_regexes(pattern: str) -> None:
    # Regex syntax in a setting is literal text, never a crash at start-up.
    patterns = DevHostPatterns([pattern, "staging.*"])
    assert patterns.match("staging.shop.com") == "staging.*"
    assert patterns.match("x.com") is None


@pytest.mark.parametrize(
    ("host", "bases", "expected"),
    [
        ("staging.realshop.com", ["other.com", "realshop.com"], "realshop.com"),
        ("dev.staging.realshop.com", ["realshop.com"], "realshop.com"),
        ("staging.realshop.com", ["staging.realshop.com"], None),  # not a proper subdomain
        ("staging.notrealshop.com", ["realshop.com"], None),  # a label boundary is needed
        ("staging.realshop.com.evil.net", ["realshop.com"], None),
        ("staging.pirate.com", ["com"], None),  # a top-level base would free every .com
        ("staging.pirate.com", [], None),
        ("staging.1.2.3.4", ["1.2.3.4"], None),  # an IP has no subdomains
    ],
)
def test_pattern_host_base(host: str, bases: list[str], expected: str | None) -> None:
    assert pattern_host_base(host, bases) == expected


# --- domain rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("www.Example.com", "example.com"),
        ("https://example.com/", "example.com"),
        ("*.example.com", "*.example.com"),
        (" *.EXAMPLE.com. ", "*.example.com"),
        ("*.www.example.com", "*.www.example.com"),
        ("*.Bücher.example", "*.xn--bcher-kva.example"),
        ("*.localhost", "*.localhost"),
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_parse_domain_rule(raw: str, expected: str) -> None:
    assert parse_domain_rule(raw) == expected
    assert parse_domain_rule(expected) == expected


@pytest.mark.parametrize(
    "raw",
    ["*", "*.", "*example.com", "a.*.com", "example.*", "*.*.example.com", "**.example.com",
     "*.1.2.3.4", "[*.example.com]", "*.exa mple.com", ""],
)  # fmt: skip
def test_parse_domain_rule_rejects(raw: str) -> None:
    with pytest.raises(InvalidHost):
        parse_domain_rule(raw)


@pytest.mark.parametrize(
    ("host", "rule", "expected"),
    [
        ("example.com", "example.com", True),
        ("shop.example.com", "example.com", False),
        ("example.org", "example.com", False),
        ("a.example.com", "*.example.com", True),
        ("a.b.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("badexample.com", "*.example.com", False),
        ("example.com.evil.org", "*.example.com", False),
    ],
)
def test_domain_matches_rule(host: str, rule: str, expected: bool) -> None:
    assert domain_matches_rule(host, rule) is expected


# --- IP rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("[::1]", "::1"),
        ("10.1.2.3/24", "10.1.2.0/24"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("192.168.0.7/32", "192.168.0.7/32"),
        ("2001:DB8::1/32", "2001:db8::/32"),
    ],
)
def test_parse_ip_rule(raw: str, expected: str) -> None:
    assert parse_ip_rule(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "example.com", "10.0.0.0/33", "10.0.0.0/", "/8", "10.0.0/8", "fe80::%1/64", "::/129"],
)
def test_parse_ip_rule_rejects(raw: str) -> None:
    with pytest.raises(InvalidHost):
        parse_ip_rule(raw)


@pytest.mark.parametrize(
    ("ip", "rule", "expected"),
    [
        ("1.2.3.4", "1.2.3.4", True),
        ("1.2.3.5", "1.2.3.4", False),
        ("10.1.2.200", "10.1.2.0/24", True),
        ("10.1.3.1", "10.1.2.0/24", False),
        ("2001:db8::42", "2001:db8::/32", True),
        ("2001:db9::42", "2001:db8::/32", False),
        ("10.1.2.3", "::/0", False),
        ("::1", "0.0.0.0/0", False),
        ("not-an-ip", "10.0.0.0/8", False),
        ("10.0.0.1", "garbage/8", False),
    ],
)
def test_ip_matches_rule(ip: str, rule: str, expected: bool) -> None:
    assert ip_matches_rule(ip, rule) is expected


# --- directories -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/var/www/html", "/var/www/html"),
        ("  /var/www/html/  ", "/var/www/html"),
        ("/var//www///html//", "/var/www/html"),
        ("/Var/WWW/Html", "/Var/WWW/Html"),
        ("/", "/"),
        ("///", "/"),
        ("\\", "\\"),
        ("C:\\inetpub\\wwwroot\\", "C:\\inetpub\\wwwroot"),
        ("C:\\", "C:\\"),
        ("C:/", "C:/"),
        ("\\\\server\\share\\", "\\\\server\\share"),
        ("/home/u/public html/", "/home/u/public html"),
        ("relative/dir/", "relative/dir"),
    ],
)
def test_normalise_directory(raw: str, expected: str) -> None:
    assert normalise_directory(raw) == expected
    assert normalise_directory(expected) == expected


@pytest.mark.parametrize(
    "raw", ["", "   ", "/var/\x00/www", "/var/www\x1b", "/var/\nwww", "/a\x7f", "/" + "a" * 1024]
)
def test_normalise_directory_rejects(raw: str) -> None:
    with pytest.raises(InvalidDirectory):
        normalise_directory(raw)


def test_directory_length_limit_is_inclusive() -> None:
    path = "/" + "a" * 1023
    assert normalise_directory(path) == path


@pytest.mark.parametrize(
    ("directory", "rule", "expected"),
    [
        ("/var/www/html/", "/var/www/html", True),
        ("/var//www/html", " /var/www/html/ ", True),
        ("/var/www/HTML", "/var/www/html", False),
        ("/var/www/html/sub", "/var/www/html", False),
        ("/var/www/html", "/var/www", False),
        ("/var/\x00", "/var/", False),
    ],
)
def test_directory_matches_rule(directory: str, rule: str, expected: bool) -> None:
    assert directory_matches_rule(directory, rule) is expected


# --- properties --------------------------------------------------------------

LDH_LABEL = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?\Z")
UNICODE_LABEL = st.text(
    alphabet=st.sampled_from("abcdeéèüößçñåøæλπжщ漢字かな"), min_size=1, max_size=12
)
TLD = st.from_regex(r"\A[a-zA-Z]{2,6}\Z")


@st.composite
def decorated_hostnames(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.one_of(LDH_LABEL, UNICODE_LABEL), min_size=0, max_size=4))
    host = ".".join([*labels, draw(TLD)])
    if draw(st.booleans()):
        host = host.upper()
    scheme = draw(st.sampled_from(["", "http://", "https://", "HTTPS://", "git+ssh://"]))
    userinfo = draw(st.sampled_from(["", "user@", "u:p@"]))
    dot = draw(st.sampled_from(["", ".", ".."]))
    port = draw(st.sampled_from(["", ":80", ":8443"]))
    suffix = draw(st.sampled_from(["", "/", "/a/b.php", "?x=1", "#frag", "/p?q=1#f"]))
    return f"{scheme}{userinfo}{host}{dot}{port}{suffix}"


def _is_ipv6(host: str) -> bool:
    return ":" in host


@settings(max_examples=300, deadline=None)
@given(decorated_hostnames())
def test_property_decorated_hostnames_normalise_cleanly(raw: str) -> None:
    try:
        host = normalise_domain(raw)
    except InvalidHost:
        # Only unicode may fail: IDNA2008 forbids e.g. "ab--c" next to a U-label.
        assert not raw.isascii()
        return
    assert normalise_domain(host) == host
    assert host == host.lower()
    assert host.isascii()
    assert not host.endswith(".")
    assert not any(char in host for char in "/?#@")
    if not _is_ipv6(host):
        assert not re.search(r":[0-9]+\Z", host)


@settings(max_examples=300, deadline=None)
@given(st.lists(LDH_LABEL, min_size=1, max_size=4), TLD)
def test_property_ldh_hostnames_always_normalise(labels: list[str], tld: str) -> None:
    raw = ".".join([*labels, tld])
    host = normalise_domain(raw)
    assert host == raw.lower().removeprefix("www.") or host == raw.lower()
    assert normalise_domain(host) == host


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_property_arbitrary_text_normalises_or_raises_invalid_host(raw: str) -> None:
    try:
        host = normalise_domain(raw)
    except InvalidHost:
        return
    assert normalise_domain(host) == host


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=30))
def test_property_ascii_text_normalises_or_raises_invalid_host(raw: str) -> None:
    try:
        host = normalise_domain(raw)
    except InvalidHost:
        return
    assert normalise_domain(host) == host


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_property_ip_addresses_round_trip(address: object) -> None:
    text = normalise_ip(str(address))
    assert normalise_ip(text) == text
    assert normalise_domain(text) == text
    assert normalise_domain(f"[{address}]:8080" if ":" in str(address) else f"{address}:80") == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_property_directory_is_idempotent_or_rejected(raw: str) -> None:
    try:
        directory = normalise_directory(raw)
    except InvalidDirectory:
        return
    assert normalise_directory(directory) == directory


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_property_rule_parsers_raise_only_invalid_host(raw: str, other: str) -> None:
    for parse in (parse_domain_rule, parse_ip_rule, normalise_ip):
        try:
            parse(raw)
        except InvalidHost:
            pass
    assert isinstance(is_dev_host(raw), bool)
    assert DevHostPatterns([other, raw]).match(raw) in (
        None,
        other.strip().lower().rstrip("."),
        raw.strip().lower().rstrip("."),
    )
    assert isinstance(ip_matches_rule(raw, other), bool)

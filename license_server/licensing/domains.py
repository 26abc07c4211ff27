"""Bindings and domain rules: which site is an installed module running on?

A licence can be bound to domains, IP addresses and installation
directories. The PHP module reports what it sees (often a full URL or a
``Host`` header), so everything is first reduced to one canonical form and
only then compared against the licence's rules:

* hostnames follow RFC 1123 (letters, digits, hyphens; labels of 1-63
  characters, at most 253 in total), internationalised names are mapped
  and converted to A-labels per UTS #46 / RFC 5891, so ``Bücher.example``
  and ``xn--bcher-kva.example`` are the same binding;
* IP addresses use the canonical text of :mod:`ipaddress`;
* directories keep their case, because paths are case-sensitive;
* development hosts: what is truly local (reserved names, loopback and private addresses)
  and the configured patterns such as ``staging.*``, which decision.py frees only under a
  domain of the license itself (DESIGN.md, "Bindings and domain rules").

Pure functions only: no I/O, safe to call on the hot verification path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from fnmatch import translate
from functools import lru_cache

import idna

__all__ = [
    "DevHostPatterns",
    "InvalidDirectory",
    "InvalidHost",
    "directory_matches_rule",
    "domain_matches_rule",
    "ip_matches_rule",
    "is_dev_host",
    "local_host_kind",
    "normalise_directory",
    "normalise_domain",
    "normalise_ip",
    "parse_domain_rule",
    "parse_ip_rule",
    "pattern_host_base",
]

MAX_HOST_LENGTH = 253  # RFC 1123 section 2.1 / RFC 1035 section 2.3.4
MAX_LABEL_LENGTH = 63
MAX_DIRECTORY_LENGTH = 1024

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
_PORT = re.compile(r":[0-9]{1,5}")
_LDH_LABEL = re.compile(r"[a-z0-9-]+")
_NUMERIC_LABEL = re.compile(r"[0-9]+")
_REPEATED_SLASHES = re.compile(r"/{2,}")
_TRAILING_SEPARATORS = re.compile(r"[/\\\s]+\Z")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE_ROOT = re.compile(r"[A-Za-z]:")

# Reserved names (RFC 2606, RFC 6761, RFC 6762) that never identify a
# production site, so licences do not count installations on them.
_DEV_TLDS = frozenset({"localhost", "test", "local", "invalid", "example"})
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_BAD_WILDCARD = "'*' may only be the whole leftmost label, as in '*.example.com'"


class InvalidHost(ValueError):
    """A value is not a hostname, IP address or valid rule."""


class InvalidDirectory(ValueError):
    """A value is not a usable installation directory."""


def _shown(raw: str) -> str:
    # Keep error messages short even when a client sends megabytes.
    return repr(raw if len(raw) <= 80 else raw[:77] + "...")


def _invalid(raw: str, reason: str) -> InvalidHost:
    return InvalidHost(f"{_shown(raw)} is not a hostname or IP address ({reason})")


def _split_authority(raw: str) -> tuple[str, bool]:
    """Reduce a URL or ``Host`` header to its host; report if it was bracketed."""
    text = raw.strip().lower()
    scheme = _SCHEME.match(text)  # anchored: a "://" later on is not a scheme
    text = text[scheme.end() if scheme else 0 :].removeprefix("//")
    # The authority ends at the first path, query or fragment delimiter
    # (RFC 3986 section 3.2); userinfo ends at its last "@".
    for delimiter in "/?#":
        text = text.partition(delimiter)[0]
    text = text.rpartition("@")[2]
    if text.startswith("["):
        inner, bracket, port = text[1:].partition("]")
        if not bracket:
            raise _invalid(raw, "unclosed '['")
        _check_port(port, raw)
        return inner, True
    if text.count(":") == 1:  # more than one colon: a bare IPv6 address
        text, colon, port = text.partition(":")
        _check_port(colon + port, raw)
    return text, False


def _check_port(suffix: str, raw: str) -> None:
    if suffix and not (_PORT.fullmatch(suffix) and int(suffix[1:]) <= 65535):
        raise _invalid(raw, "bad port")


def _canonical_ip(text: str, raw: str) -> str:
    # Zone ids ("fe80::1%eth0") only mean something on the sending machine.
    if "%" in text:
        raise _invalid(raw, "zone ids are not allowed")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _invalid(raw, "malformed IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _to_ascii(host: str, raw: str) -> str:
    labels = host.split(".")
    # Plain ASCII names skip the IDNA codec: it is the common case, and
    # IDNA2008 would refuse real RFC 1123 names such as "r3---sn-abc".
    if host.isascii() and not any(label.startswith("xn--") for label in labels):
        return host
    try:
        # UseSTD3ASCIIRules (UTS #46 section 4) keeps the result LDH-only.
        encoded = idna.encode(host, uts46=True, std3_rules=True)
    except (idna.IDNAError, UnicodeError, ValueError):
        raise _invalid(raw, "not a valid internationalised name") from None
    return encoded.decode("ascii").rstrip(".")


def _check_labels(name: str, raw: str) -> list[str]:
    if not name:
        raise _invalid(raw, "empty")
    if len(name) > MAX_HOST_LENGTH:
        raise _invalid(raw, f"longer than {MAX_HOST_LENGTH} characters")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise _invalid(raw, "empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise _invalid(raw, f"label longer than {MAX_LABEL_LENGTH} characters")
        if not _LDH_LABEL.fullmatch(label):
            raise _invalid(raw, "only letters, digits and hyphens are allowed")
        if label[0] == "-" or label[-1] == "-":
            raise _invalid(raw, "label starts or ends with a hyphen")
    return labels


def _canonical_name(host: str, raw: str, *, strip_www: bool) -> str:
    name = _to_ascii(host.rstrip("."), raw)
    labels = _check_labels(name, raw)
    # An all-numeric top label only makes sense as a dotted IPv4 address
    # (RFC 1123 section 2.1); this also catches full-width digits after IDNA.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return _canonical_ip(name, raw)
    # Loop so that "www.www.x.com" reaches a fixed point (idempotence).
    while strip_www and labels[0] == "www" and len(labels) > 2:
        labels = labels[1:]
    return ".".join(labels)


@lru_cache(maxsize=65536)  # pure, and the verify path sees the same values over and over
def normalise_domain(raw: str) -> str:
    """Return the canonical hostname or IP address in ``raw`` (a host or URL)."""
    host, bracketed = _split_authority(raw)
    if bracketed or ":" in host:
        return _canonical_ip(host, raw)
    return _canonical_name(host, raw, strip_www=True)


@lru_cache(maxsize=65536)  # pure, and the verify path sees the same values over and over
def normalise_ip(raw: str) -> str:
    """Return the canonical text of an IPv4/IPv6 address (brackets allowed)."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _canonical_ip(text, raw)


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def local_host_kind(host: str) -> str | None:
    """Say why an already normalised host is a local development machine, or None.

    Only what can never be a public site: reserved names (RFC 2606, RFC 6761, RFC 6762) and
    loopback, link-local, unspecified and private addresses (RFC 1918, RFC 4193).
    """
    address = _parse_ip(host)
    if address is None:
        tld = host.rpartition(".")[2]
        if tld not in _DEV_TLDS:
            return None
        return "reserved name" if tld == host else f"reserved name .{tld}"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_unspecified:
        return "unspecified address"
    if any(address in network for network in _PRIVATE_NETWORKS):
        return "private address"
    return None


def is_dev_host(host: str) -> bool:
    """Tell whether an already normalised host is a local development machine.

    Pattern hosts (``staging.*``) are not judged here: whether one is free depends on the
    license (see `DevHostPatterns` and licensing/decision.py).
    """
    return local_host_kind(host) is not None


class DevHostPatterns:
    """The configured development-host patterns (``staging.*``), compiled once into one regex.

    They are matched on each check from a domain the license has not bound (and each re-check
    of a dev host), so the globs are translated once when the verifier is built, not per call.
    A match alone frees nothing: the host must also be a subdomain of a domain the license is
    bound to or allowed (`pattern_host_base`).
    """

    __slots__ = ("_names", "_regex")

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        # "." in a pattern is literal, so "staging.*" needs a whole first label
        # "staging" and can never match "stagingfoo.com".
        cleaned = [p.strip().lower().rstrip(".") for p in patterns]
        self._names = [p for p in cleaned if p]
        alternatives = (f"(?P<p{i}>{translate(p)})" for i, p in enumerate(self._names))
        self._regex = re.compile("|".join(alternatives)) if self._names else None

    def match(self, host: str) -> str | None:
        """Return the pattern that a normalised host matches, or None."""
        if self._regex is None:
            return None
        found = self._regex.match(host)
        if found is None or found.lastgroup is None:
            return None
        return self._names[int(found.lastgroup[1:])]

    def __repr__(self) -> str:
        return f"DevHostPatterns({self._names!r})"


def pattern_host_base(host: str, bases: Iterable[str]) -> str | None:
    """Return the first base domain of which ``host`` is a proper subdomain, or None.

    A base of one label ("com", "net") is never accepted: binding it would make every
    ``staging.<anything>.com`` a subdomain of the license.
    """
    for base in bases:
        if "." in base and _parse_ip(base) is None and host.endswith("." + base):
            return base
    return None


def parse_domain_rule(raw: str) -> str:
    """Validate an allowed-domain rule: an exact host or ``*.example.com``."""
    host, bracketed = _split_authority(raw)
    if host.startswith("*.") and not bracketed:
        base = host[2:]
        if _parse_ip(base) is not None:
            raise _invalid(raw, "a wildcard cannot cover an IP address")
        if "*" in base:
            raise _invalid(raw, _BAD_WILDCARD)
        # "*.www.example.com" means exactly that, so "www." is kept here.
        return "*." + _canonical_name(base, raw, strip_www=False)
    if "*" in host:
        raise _invalid(raw, _BAD_WILDCARD)
    return normalise_domain(raw)


def domain_matches_rule(host: str, rule: str) -> bool:
    """Match a normalised host against a parsed domain rule."""
    if rule.startswith("*."):
        # The suffix keeps its leading dot: any depth matches, the apex not.
        return host.endswith(rule[1:])
    return host == rule


def parse_ip_rule(raw: str) -> str:
    """Validate an IP rule: an exact address or a CIDR network."""
    text = raw.strip()
    if "/" not in text:
        return normalise_ip(text)
    if "%" in text:
        raise _invalid(raw, "zone ids are not allowed")
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise _invalid(raw, "malformed CIDR network") from None


@lru_cache(maxsize=1024)
def _network(rule: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(rule, strict=False)
    except ValueError:
        return None


def ip_matches_rule(ip: str, rule: str) -> bool:
    """Match a normalised IP against a parsed IP rule; never raises."""
    if "/" not in rule:
        return ip == rule
    network, address = _network(rule), _parse_ip(ip)
    if network is None or address is None:
        return False
    # Containment is already False across versions; being explicit is cheap.
    return address.version == network.version and address in network


@lru_cache(maxsize=65536)  # pure, and the verify path sees the same values over and over
def normalise_directory(raw: str) -> str:
    """Return a canonical installation directory (case is preserved)."""
    path = raw.strip()
    if not path:
        raise InvalidDirectory("The directory is empty.")
    if len(path) > MAX_DIRECTORY_LENGTH:
        raise InvalidDirectory(f"The directory is longer than {MAX_DIRECTORY_LENGTH} characters.")
    if _CONTROL_CHARS.search(path):
        raise InvalidDirectory(f"The directory {_shown(path)} contains control characters.")
    # Backslashes are left alone so UNC paths ("\\\\server\\share") survive.
    path = _REPEATED_SLASHES.sub("/", path)
    trimmed = _TRAILING_SEPARATORS.sub("", path)
    separators = [char for char in path[len(trimmed) :] if char in "/\\"]
    if not trimmed:  # "/" or "\": the root stays as it is
        return separators[0]
    if separators and _DRIVE_ROOT.fullmatch(trimmed):  # "C:\" is a root too
        return trimmed + separators[0]
    return trimmed


def directory_matches_rule(directory: str, rule: str) -> bool:
    """Compare two directories after normalisation; invalid ones never match."""
    try:
        return normalise_directory(directory) == normalise_directory(rule)
    except InvalidDirectory:
        return False

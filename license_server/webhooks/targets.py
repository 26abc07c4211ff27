"""Which URLs a webhook may be sent to: the SSRF defence (ASVS 4.0.3 V5.2.6, V12.6.1).

A webhook makes the server send requests to a URL that a member of staff or an API key chose,
from inside the vendor's network. Refused, unless `[webhooks] allow_private_targets = true`:
URLs that are not http(s), carry credentials, or whose host is, or resolves to, an address
that is not public (loopback, RFC 1918 private, link-local such as the cloud metadata service
169.254.169.254, carrier-grade NAT, multicast, reserved, IPv4-mapped forms of these). Plain
http:// is refused unless `allow_http = true`.

The URL is checked when it is saved (`check_url`: syntax, scheme, literal addresses) and the
addresses again at every delivery (`GuardedResolver`), where aiohttp connects to exactly the
addresses the check saw: a name that resolves to a public address at save time and to
127.0.0.1 later (DNS rebinding) is refused then. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2000


class TargetRefused(ValueError):
    """A webhook URL that may not be used; the message is one line for staff."""


def address_allowed(address: str, *, allow_private: bool) -> bool:
    if allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """`url` if it may be a webhook endpoint, else TargetRefused saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise TargetRefused("the URL must be ASCII without spaces (write a domain as punycode)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL cannot be read") from None
    if parts.scheme not in ("https", "http"):
        raise TargetRefused("the URL must start with https://")
    if parts.scheme == "http" and not allow_http:
        raise TargetRefused("the URL must use https:// (plain http:// is switched off)")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not hold a user name or password")
    if parts.fragment:
        raise TargetRefused("the URL must not have a #fragment")
    host = parts.hostname or ""
    if not host:
        raise TargetRefused("the URL has no host")
    if port == 0:
        raise TargetRefused("the URL's port must be between 1 and 65535")
    if _is_address(host):
        if not address_allowed(host, allow_private=allow_private):
            raise TargetRefused("the URL's address is not public (loopback, private, ...)")
        return url
    name = host.rstrip(".")
    if not name or not all(0 < len(label) <= 63 for label in name.split(".")):
        raise TargetRefused("the URL's host is not a valid name")
    if not allow_private and (name == "localhost" or name.endswith(_PRIVATE_SUFFIXES)):
        raise TargetRefused("the URL's host is not a public name")
    return url


_PRIVATE_SUFFIXES = (".localhost", ".internal", ".local", ".lan", ".home.arpa")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp does, then refuses a name with any non-public address."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not address_allowed(result["host"], allow_private=self._allow_private):
                raise OSError(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()

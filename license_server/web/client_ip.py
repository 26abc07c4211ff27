"""The caller's IP address, believing X-Forwarded-For only from configured trusted proxies.

Anyone can send an X-Forwarded-For header; trusting it from everyone would let a client pick
the IP its rate limits and attempt log are keyed by (seed 003 trusts it blindly; we do not).
The header is read right to left, skipping addresses of trusted proxies: the first address not
ours is the client (the same rule as RFC 7239's proxy chain).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        ip = _parse(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def __call__(self, request: web.Request) -> str:
        peer = _canonical(request.remote or "")
        if not self._trusted or not self._is_trusted(peer):
            return peer
        forwarded = request.headers.getall("X-Forwarded-For", [])
        hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                parsed = _parse(hop)
                # A garbled header falls back to the proxy itself.
                return str(parsed) if parsed is not None else peer
        return peer


@functools.lru_cache(maxsize=4096)
def _canonical(address: str) -> str:
    """`address` in its canonical form (as `_parse`), or as it is if it is no address. Asked
    for every check (twice): the str() of an address object is not free."""
    parsed = _parse(address)
    return str(parsed) if parsed is not None else address


@functools.lru_cache(maxsize=4096)
def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address in one canonical form: an IPv4-mapped IPv6 peer is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip

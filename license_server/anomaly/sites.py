"""Which site a host is, and which network an address is in: the units the detectors count.

A site is a host's registrable domain from the Public Suffix List (`publicsuffixlist` ships the
list inside the package and never downloads it, so nothing reaches the network at run time):
`a.shop.co.uk` and `b.shop.co.uk` are one site, `shop.co.uk` and `other.co.uk` two, and
`alice.github.io` is its own site because `github.io` is a public suffix. Development hosts
(localhost, private addresses, *.test, ...: `domains.local_host_kind`) are no site at all; a
public IP literal used as a host counts as the network it is in; a host under no known suffix
(`intranet`) is its own site.

A network is an IPv4 /24 or IPv6 /64 (an IPv4-mapped IPv6 address is IPv4): one hosting
customer, one office, one attacker's subnet. Both maps are memoised with a bounded dict.
"""

from __future__ import annotations

import ipaddress

from publicsuffixlist import PublicSuffixList

from license_server.anomaly.windows import admit
from license_server.licensing.domains import local_host_kind

_PSL = PublicSuffixList()  # the bundled snapshot (only_icann=False: private suffixes too)
CACHE_SIZE = 65_536
_sites: dict[str, str | None] = {}
_networks: dict[str, str | None] = {}


def network_of(address: str) -> str | None:
    """'203.0.113.0/24' or '2001:db8:1:2::/64'; None for what is not an IP address."""
    known = _networks.get(address, False)
    if known is not False:
        return known  # type: ignore[return-value]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        network = None
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = 24 if ip.version == 4 else 64
        network = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    admit(_networks, CACHE_SIZE)
    _networks[address] = network
    return network


def site_of(host: str) -> str | None:
    """The registrable domain of an already normalised host; None for no site (empty, or a
    development host)."""
    known = _sites.get(host, False)
    if known is not False:
        return known  # type: ignore[return-value]
    site: str | None
    if not host or local_host_kind(host) is not None:
        site = None
    else:
        network = network_of(host.strip("[]"))
        site = network if network is not None else (_PSL.privatesuffix(host) or host)
    admit(_sites, CACHE_SIZE)
    _sites[host] = site
    return site


def is_public_ip(address: str) -> bool:
    """An IP literal that is not a local machine's (loopback, link-local, private: what a
    server behind NAT sees of itself). Documentation ranges count as public, as in the tests."""
    return network_of(address) is not None and local_host_kind(address) is None


def display_network(network: str) -> str:
    """A network as staff see it in alerts, truncated as the access log truncates addresses:
    an IPv4 /24, an IPv6 /48 (a /64 names one customer line)."""
    if ":" not in network:
        return network
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return network
    return str(net.supernet(new_prefix=48)) if net.prefixlen > 48 else str(net)

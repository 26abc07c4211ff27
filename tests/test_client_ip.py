"""The caller's IP: X-Forwarded-For believed only from trusted proxies, read right to left."""

from __future__ import annotations

import secrets
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.settings import ProxySettings
from license_server.web.client_ip import ClientIpResolver
from tests.conftest import with_sections


def request_from(peer: str | None, *forwarded: str):
    """A request whose TCP peer is `peer`, with one X-Forwarded-For header per `forwarded`."""
    if peer is None:
        peername = None  # e.g. a UNIX socket
    elif ":" in peer:
        peername = (peer, 40000, 0, 0)
    else:
        peername = (peer, 40000)
    transport = mock.Mock()
    extra = {"peername": peername, "sockname": ("127.0.0.1", 8080)}
    transport.get_extra_info.side_effect = lambda key, default=None: extra.get(key, default)
    headers = CIMultiDict()
    for value in forwarded:
        headers.add("X-Forwarded-For", value)
    request = make_mocked_request("POST", "/api/v1/verify", headers=headers, transport=transport)
    assert request.remote == (peer if peer is not None else None)
    return request


def test_the_peer_is_the_client_when_no_proxy_is_trusted():
    resolve = ClientIpResolver([])
    assert resolve(request_from("203.0.113.9")) == "203.0.113.9"
    # Anyone can send the header: without trusted proxies it is ignored entirely.
    assert resolve(request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    assert resolve(request_from("127.0.0.1", "198.51.100.1")) == "127.0.0.1"


def test_the_header_is_ignored_from_a_peer_that_is_not_trusted():
    resolve = ClientIpResolver(["127.0.0.1"])
    assert resolve(request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_a_trusted_peer_without_the_header_is_the_client():
    resolve = ClientIpResolver(["127.0.0.1"])
    assert resolve(request_from("127.0.0.1")) == "127.0.0.1"
    assert resolve(request_from("127.0.0.1", "")) == "127.0.0.1"
    assert resolve(request_from("127.0.0.1", " , ")) == "127.0.0.1"


def test_a_trusted_peer_names_the_client():
    resolve = ClientIpResolver(["127.0.0.1"])
    assert resolve(request_from("127.0.0.1", "198.51.100.1")) == "198.51.100.1"
    assert resolve(request_from("127.0.0.1", "  198.51.100.1  ")) == "198.51.100.1"


def test_the_right_most_untrusted_hop_wins_over_what_the_client_prepended():
    resolve = ClientIpResolver(["127.0.0.1"])
    # The client sent "X-Forwarded-For: 1.2.3.4" itself; our proxy appended its real address.
    assert resolve(request_from("127.0.0.1", "1.2.3.4, 198.51.100.1")) == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_skipped():
    resolve = ClientIpResolver(["10.0.0.0/8"])
    chain = "1.2.3.4, 198.51.100.7, 10.1.2.3, 10.200.0.1"
    assert resolve(request_from("10.0.0.1", chain)) == "198.51.100.7"
    # A proxy that is not ours in the middle of the chain is where belief stops.
    chain = "198.51.100.7, 203.0.113.50, 10.1.2.3"
    assert resolve(request_from("10.0.0.1", chain)) == "203.0.113.50"


def test_several_trusted_ranges():
    resolve = ClientIpResolver(["127.0.0.1", "10.0.0.0/8", "192.168.1.0/24"])
    chain = "198.51.100.7, 192.168.1.20, 10.9.9.9"
    assert resolve(request_from("127.0.0.1", chain)) == "198.51.100.7"
    assert resolve(request_from("192.168.1.5", chain)) == "198.51.100.7"
    # 192.168.2.x is outside the /24: it is the client.
    assert resolve(request_from("10.0.0.1", "198.51.100.7, 192.168.2.1")) == "192.168.2.1"


@pytest.mark.parametrize(
    "header",
    [
        "not-an-ip",
        "unknown",
        "198.51.100.7, garbage",  # the right-most untrusted hop is garbled
        "198.51.100.7:4711",  # ports are not part of X-Forwarded-For
        "[2001:db8::1]",
        "198.51.100.7; for=1.2.3.4",
        "999.1.1.1",
    ],
)
def test_a_garbled_header_falls_back_to_the_peer(header):
    resolve = ClientIpResolver(["10.0.0.0/8"])
    assert resolve(request_from("10.0.0.1", header)) == "10.0.0.1"


def test_garbage_left_of_the_client_does_not_matter():
    resolve = ClientIpResolver(["10.0.0.0/8"])
    assert resolve(request_from("10.0.0.1", "garbage, 198.51.100.7")) == "198.51.100.7"


def test_several_headers_are_read_as_one_list_in_order():
    resolve = ClientIpResolver(["10.0.0.0/8"])
    request = request_from("10.0.0.1", "1.2.3.4, 198.51.100.1", "203.0.113.5, 10.0.0.2")
    assert resolve(request) == "203.0.113.5"
    request = request_from("10.0.0.1", "198.51.100.1", "10.0.0.3", "10.0.0.2")
    assert resolve(request) == "198.51.100.1"
    request = request_from("10.0.0.1", "198.51.100.1", "garbage")
    assert resolve(request) == "10.0.0.1"


def test_ipv6_peers_proxies_and_clients():
    resolve = ClientIpResolver(["::1", "fd00::/8"])
    assert resolve(request_from("::1", "2001:db8::5")) == "2001:db8::5"
    # Hops are returned in canonical form.
    assert resolve(request_from("::1", "2001:DB8:0:0::0005")) == "2001:db8::5"
    chain = "2001:db8::5, fd12:3456::1, fd00::2"
    assert resolve(request_from("fd00::9", chain)) == "2001:db8::5"
    # An IPv4 client behind an IPv6 proxy, and the other way round.
    assert resolve(request_from("::1", "198.51.100.7")) == "198.51.100.7"
    assert ClientIpResolver(["127.0.0.1"])(request_from("127.0.0.1", "2001:db8::7")) == (
        "2001:db8::7"
    )
    # An untrusted IPv6 peer is the client, header or not.
    assert resolve(request_from("2001:db8::99", "198.51.100.7")) == "2001:db8::99"


def test_an_ipv4_network_does_not_trust_ipv6_peers():
    resolve = ClientIpResolver(["0.0.0.0/0"])
    assert resolve(request_from("2001:db8::99", "198.51.100.7")) == "2001:db8::99"


def test_no_peer_address_at_all():
    resolve = ClientIpResolver(["127.0.0.1"])
    assert resolve(request_from(None, "198.51.100.7")) == ""


def test_trusted_proxies_setting_accepts_a_comma_separated_list():
    proxies = ProxySettings(trusted_proxies="10.0.0.0/8, 127.0.0.1 ,").trusted_proxies
    assert proxies == ("10.0.0.0/8", "127.0.0.1")
    with pytest.raises(ValueError, match="not an IP address or CIDR range"):
        ProxySettings(trusted_proxies=("10.0.0.0/33",))


# -- through the app: what the attempt log records ------------------------------------------


async def source_ips(aiohttp_client, settings, trusted: tuple[str, ...]) -> list[str]:
    settings = with_sections(settings, proxy=ProxySettings(trusted_proxies=trusted))
    client = await aiohttp_client(create_app(settings))
    for forwarded in ("198.51.100.7", "1.2.3.4, 203.0.113.8", None):
        response = await client.post(
            "/api/v1/verify",
            data={"license_key": "NOPE", "domain": "shop.com", "nonce": secrets.token_urlsafe(24)},
            headers={"X-Forwarded-For": forwarded} if forwarded else None,
        )
        assert response.status == 200
    async with client.app[RUNTIME].db.read() as conn:
        rows = await conn.fetch_all("SELECT source_ip FROM verification_attempts ORDER BY id")
    return [row["source_ip"] for row in rows]


async def test_the_app_ignores_the_header_without_trusted_proxies(aiohttp_client, settings):
    assert await source_ips(aiohttp_client, settings, ()) == ["127.0.0.1"] * 3


async def test_the_app_believes_a_trusted_proxy(aiohttp_client, settings):
    assert await source_ips(aiohttp_client, settings, ("127.0.0.1",)) == [
        "198.51.100.7",
        "203.0.113.8",
        "127.0.0.1",
    ]


async def test_the_app_ignores_the_header_when_the_peer_is_not_the_trusted_proxy(
    aiohttp_client, settings
):
    assert await source_ips(aiohttp_client, settings, ("10.0.0.0/8",)) == ["127.0.0.1"] * 3


def test_an_ipv4_mapped_peer_matches_ipv4_rules_and_is_stored_as_ipv4():
    resolve = ClientIpResolver(["127.0.0.1"])
    assert resolve(request_from("::ffff:127.0.0.1", "203.0.113.7")) == "203.0.113.7"
    assert ClientIpResolver([])(request_from("::ffff:198.51.100.4")) == "198.51.100.4"

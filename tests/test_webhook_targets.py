"""Webhook URLs and endpoint input: the SSRF rules (ASVS 4.0.3 V5.2.6, V12.6.1) and hostile
input (wrong types, unknown or repeated event names, oversize, bad text). Each protection has
a test that fails when it is removed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from license_server.staff.webhooks import EndpointSpec
from license_server.webhooks import targets
from license_server.webhooks.targets import GuardedResolver, TargetRefused, check_url

REFUSED = [
    ("ftp://hooks.example/x", "https://"),
    ("file:///etc/passwd", "https://"),
    ("gopher://hooks.example/", "https://"),
    ("javascript:alert(1)", "https://"),
    ("http://hooks.example/x", "https://"),  # plain http is off by default
    ("https://user:pw@hooks.example/", "user name"),
    ("https://hooks.example/#frag", "fragment"),
    ("https://127.0.0.1/x", "not public"),
    ("https://[::1]/x", "not public"),
    ("https://10.1.2.3/", "not public"),
    ("https://192.168.0.1/", "not public"),
    ("https://172.16.0.1/", "not public"),
    ("https://169.254.169.254/latest/meta-data", "not public"),  # cloud metadata
    ("https://100.64.0.1/", "not public"),
    ("https://0.0.0.0/", "not public"),
    ("https://[::ffff:127.0.0.1]/", "not public"),
    ("https://[fe80::1]/", "not public"),
    ("https://224.0.0.1/", "not public"),
    ("https://localhost/x", "public name"),
    ("https://db.internal/x", "public name"),
    ("https://x." + "a" * 64 + ".example/", "valid name"),
    ("https:///nohost", "no host"),
    ("https://hooks.example:0/", "port"),
    ("https://hooks.example:99999/", "cannot be read"),
    ("https://hooks.example/ x", "ASCII"),
    ("https://hööks.example/", "ASCII"),
    ("https://hooks.example/\x00", "ASCII"),
    ("https://hooks.example/" + "a" * 2000, "longer"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_refused_urls(url, why):
    with pytest.raises(TargetRefused, match=why):
        check_url(url, allow_http=False, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example/in", "https://93.184.216.34:8443/x?y=1", "https://[2001:4860::1]/"],
)
def test_public_https_urls_are_accepted(url):
    assert check_url(url, allow_http=False, allow_private=False) == url


def test_the_settings_open_what_they_name():
    assert check_url("http://127.0.0.1:9/x", allow_http=True, allow_private=True)
    with pytest.raises(TargetRefused):  # private allowed, http not
        check_url("http://127.0.0.1:9/x", allow_http=False, allow_private=True)
    with pytest.raises(TargetRefused):  # http allowed, private not
        check_url("http://127.0.0.1:9/x", allow_http=True, allow_private=False)


class _Fixed:
    def __init__(self, *addresses):
        self.addresses = addresses

    async def resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": 0} for a in self.addresses]  # fmt: skip

    async def close(self):
        pass


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1"])
async def test_a_name_resolving_to_a_private_address_is_refused_at_connect(address):
    """DNS rebinding: the name passed the check when saved, resolves privately now."""
    resolver = GuardedResolver(allow_private=False)
    resolver._inner = _Fixed("93.184.216.34", address)
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("hooks.example", 443)
    allowed = GuardedResolver(allow_private=True)
    allowed._inner = _Fixed(address)
    assert (await allowed.resolve("hooks.example", 443))[0]["host"] == address


async def test_a_public_name_resolves():
    resolver = GuardedResolver(allow_private=False)
    resolver._inner = _Fixed("93.184.216.34")
    assert len(await resolver.resolve("hooks.example", 443)) == 1


def test_address_check_unwraps_ipv4_mapped_addresses():
    assert not targets.address_allowed("::ffff:10.0.0.1", allow_private=False)
    assert targets.address_allowed("::ffff:93.184.216.34", allow_private=False)
    assert not targets.address_allowed("not an address", allow_private=False)


GOOD = {"url": "https://hooks.example/in", "events": ["license.created"]}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"events": []}, "at least 1"),
        ({"events": ["license.exploded"]}, "unknown event type"),
        ({"events": ["license.created", "license.created"]}, "listed twice"),
        ({"events": "license.created"}, "tuple"),
        ({"events": [1]}, "string"),
        ({"url": ""}, "at least 1"),
        ({"url": None}, "string"),
        ({"url": "https://h.example/" + "a" * 2000}, "at most"),
        ({"description": "x" * 201}, "at most"),
        ({"description": "two\nlines"}, "one line"),
        ({"enabled": "maybe"}, "bool"),
        ({"secret": "x"}, "Extra inputs"),
    ],
)
def test_hostile_endpoint_input_is_refused(change, why):
    with pytest.raises(ValidationError, match=why):
        EndpointSpec.model_validate({**GOOD, **change})


def test_event_names_are_kept_sorted_and_valid():
    spec = EndpointSpec.model_validate({**GOOD, "events": ["license.revoked", "alert.raised"]})
    assert spec.events == ("alert.raised", "license.revoked")

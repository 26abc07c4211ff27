"""The WHMCS-compatible endpoint through HTTP, as the WHMCS sample client sees it."""

from __future__ import annotations

import hashlib
import re

import pytest
from aiohttp import FormData

from license_server.licensing.lifecycle import Action
from license_server.web import whmcs_format
from tests.verify_helpers import attempts, issue, product

URL = "/modules/servers/licensing/verify.php"
SECRET = "s3cret-in-every-module"
TAG_ORDER = [
    "status", "registeredname", "companyname", "email", "serviceid", "productid",
    "productname", "regdate", "nextduedate", "billingcycle", "validdomain", "validip",
    "validdirectory", "configoptions", "customfields", "addons", "md5hash", "licensesignature",
]  # fmt: skip


def sample_parse(body: bytes) -> dict[str, str]:
    """The WHMCS sample's parser, verbatim in behaviour: empty tags vanish."""
    return dict(re.findall(r"<(.*?)>([^<]+)</\1>", body.decode(), flags=re.IGNORECASE))


async def check(client, key="", domain="shop.com", ip="1.2.3.4", directory="/var/www/m",
                token="1700000000abc", raw_body: str | None = None):  # fmt: skip
    body = raw_body
    if body is None:
        fields = {"licensekey": key, "domain": domain, "ip": ip, "dir": directory,
                  "check_token": token}  # fmt: skip
        body = "".join(f"{k}={v}&" for k, v in fields.items())  # the sample's trailing &
    response = await client.post(
        URL, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    return response, await response.read()


@pytest.fixture
async def key(app_runtime):
    await product(app_runtime, name="My <Module> & Co", whmcs_secret=SECRET)
    _, key = await issue(app_runtime, company="S&S Ltd")
    return key


async def test_active_answer_has_the_whmcs_tag_set_in_order(client, app_runtime, key):
    response, body = await check(client, key, domain="www.Shop.com")
    assert response.status == 200
    assert not body.startswith(b"<?xml")
    lines = body.decode().split("\n")
    assert [re.match(r"<(\w+)>", line).group(1) for line in lines] == TAG_ORDER
    values = sample_parse(body)
    assert values["status"] == "Active"
    assert values["registeredname"] == "Smith &amp; Sons"
    assert values["companyname"] == "S&amp;S Ltd"
    assert values["productname"] == "My &lt;Module&gt; &amp; Co"
    assert values["validdomain"] == "Shop.com,www.Shop.com"  # echoed as the module sent it
    assert (values["validip"], values["validdirectory"]) == ("1.2.3.4", "/var/www/m")
    assert values["nextduedate"] == "0000-00-00" and values["billingcycle"] == "One Time"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", values["regdate"])
    assert values["md5hash"] == hashlib.md5((SECRET + "1700000000abc").encode()).hexdigest()
    for empty in ("configoptions", "customfields", "addons"):
        assert empty not in values  # empty tags vanish in the sample's parse
    assert whmcs_format.verify(body, "1700000000abc", app_runtime.keyring)
    assert not whmcs_format.verify(body, "another-token", app_runtime.keyring)
    assert not whmcs_format.verify(body.replace(b"Active", b"Activ3"), "1700000000abc",
                                   app_runtime.keyring)  # fmt: skip


async def test_later_checks_echo_the_first_bindings(client, app_runtime, key):
    await check(client, key, domain="shop.com", ip="1.2.3.4", directory="/var/www/m")
    _, body = await check(client, key, domain="www.shop.com", ip="1.2.3.4", directory="/var/www/m")
    values = sample_parse(body)
    assert values["status"] == "Active"
    assert values["validdomain"] == "shop.com,www.shop.com"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"domain": "other.com"}, "Domain Invalid"),
        ({"ip": "5.6.7.8"}, "IP Address Invalid"),
        ({"directory": "/home/pirate"}, "Directory Invalid"),
    ],
)
async def test_binding_mismatch_messages(client, app_runtime, key, change, message):
    await check(client, key)
    _, body = await check(client, key, **change)
    assert sample_parse(body) == {
        "status": "Invalid",
        "message": message,
        "licensesignature": sample_parse(body)["licensesignature"],
    }


@pytest.mark.parametrize(
    "pirate", ["staging.pirate-shop.com", "dev.pirate-two.net", "staging.pirate-three.org"]
)
async def test_pattern_hosts_are_free_only_under_the_bound_domain(client, app_runtime, key, pirate):
    assert sample_parse((await check(client, key, domain="realshop.com"))[1])["status"] == "Active"
    _, body = await check(client, key, domain="staging.realshop.com")
    assert sample_parse(body)["status"] == "Active"  # a dev host: no seat
    # The note of the native answer stays off this wire: legacy parsers get the WHMCS tag set.
    assert [re.match(r"<(\w+)>", line).group(1) for line in body.decode().split("\n")] == TAG_ORDER
    _, body = await check(client, key, domain=pirate)  # the only seat is taken: not free
    assert (sample_parse(body)["status"], sample_parse(body)["message"]) == (
        "Invalid",
        "Domain Invalid",
    )
    assert (await attempts(app_runtime))[-1]["reason"] == "seat_limit"


async def test_unknown_key_is_invalid_alone(client, app_runtime, key):
    _, body = await check(client, "Leased-0123456789")
    values = sample_parse(body)
    assert set(values) == {"status", "licensesignature"} and values["status"] == "Invalid"
    (row,) = await attempts(app_runtime)
    assert (row["endpoint"], row["result"], row["reason"]) == ("whmcs", "invalid", "unknown_key")
    assert row["license_id"] is None and len(row["key_hash"]) == 32


@pytest.mark.parametrize(
    ("action", "wire"), [(Action.SUSPEND, "Suspended"), (Action.EXPIRE, "Expired")]
)
async def test_expired_and_suspended_carry_the_full_tag_set(client, app_runtime, action, wire):
    await product(app_runtime, whmcs_secret=SECRET)
    license, key = await issue(app_runtime)
    await app_runtime.licenses.apply(license.id, action)
    _, body = await check(client, key)
    values = sample_parse(body)
    assert values["status"] == wire
    assert {"registeredname", "serviceid", "productid", "md5hash"} <= set(values)


async def test_revoked_is_invalid_on_the_wire(client, app_runtime, key):
    license = await app_runtime.licenses.license_by_key(key)
    await app_runtime.licenses.apply(license.id, Action.REVOKE)
    _, body = await check(client, key)
    assert sample_parse(body)["status"] == "Invalid"


async def test_trimmed_clients_posting_only_key_and_domain(client, app_runtime, key):
    _, body = await check(client, raw_body=f"licensekey={key}&domain=shop.com")
    values = sample_parse(body)
    assert values["status"] == "Active"
    assert values["validip"] == "127.0.0.1"  # the caller's address
    assert "validdirectory" not in values
    assert values["md5hash"] == hashlib.md5(SECRET.encode()).hexdigest()  # no token: secret+""
    _, again = await check(client, raw_body=f"licensekey={key}&domain=www.shop.com&")
    assert sample_parse(again)["status"] == "Active"


async def test_multipart_bodies(client, app_runtime, key):
    form = FormData()
    for name, value in {"licensekey": key, "domain": "shop.com", "ip": "1.2.3.4",
                        "dir": "/d", "check_token": "t" * 42}.items():  # fmt: skip
        form.add_field(name, value)
    response = await client.post(URL, data=form)
    assert sample_parse(await response.read())["status"] == "Active"


async def test_missing_key_and_bad_domain(client, app_runtime, key):
    _, body = await check(client, raw_body="domain=shop.com&")
    assert sample_parse(body)["status"] == "Invalid"
    _, body = await check(client, key, domain="not a domain")
    assert sample_parse(body)["message"] == "Domain Invalid"
    _, body = await check(client, raw_body="")
    assert sample_parse(body)["status"] == "Invalid"


async def test_without_a_secret_there_is_no_md5hash(client, app_runtime):
    await product(app_runtime, code="nosecret")
    _, key = await issue(app_runtime, "nosecret")
    _, body = await check(client, key)
    assert "md5hash" not in sample_parse(body)


async def test_a_second_free_trial_on_a_held_domain_is_suspended(client, app_runtime):
    await product(app_runtime, code="trial", free_trial=True, whmcs_secret=SECRET)
    _, first = await issue(app_runtime, "trial")
    _, second = await issue(app_runtime, "trial")
    assert sample_parse((await check(client, first))[1])["status"] == "Active"
    assert sample_parse((await check(client, second))[1])["status"] == "Suspended"


async def test_banned_domains_and_ips_are_suspended(client, app_runtime, key):
    await app_runtime.bans.ban("domain", "pirate.net")
    assert sample_parse((await check(client, key, domain="pirate.net"))[1])["status"] == (
        "Suspended"
    )
    await app_runtime.bans.ban("ip", "9.9.9.9")
    _, body = await check(client, key, domain="fine.net", ip="9.9.9.9")
    assert sample_parse(body)["status"] == "Suspended"


async def test_product_options_allow_conflicts(client, app_runtime):
    await product(app_runtime, code="loose", allow_ip_conflict=True,
                  allow_directory_conflict=True)  # fmt: skip
    _, key = await issue(app_runtime, "loose")
    await check(client, key, ip="1.1.1.1", directory="/a")
    _, body = await check(client, key, ip="2.2.2.2", directory="/b")
    values = sample_parse(body)
    assert values["status"] == "Active"
    assert (values["validip"], values["validdirectory"]) == ("2.2.2.2", "/b")


async def test_reissued_license_binds_again(client, app_runtime, key):
    await check(client, key, domain="old.com")
    license = await app_runtime.licenses.license_by_key(key)
    await app_runtime.licenses.apply(license.id, Action.REISSUE)
    _, body = await check(client, key, domain="www.new.com", ip="7.7.7.7", directory="/n")
    values = sample_parse(body)
    assert values["status"] == "Active"
    assert values["validdomain"] == "new.com,www.new.com"
    assert (values["validip"], values["validdirectory"]) == ("7.7.7.7", "/n")


async def test_rate_limited_answers_are_empty(aiohttp_client, settings, tmp_path):
    from license_server.app import create_app
    from license_server.appkeys import RUNTIME
    from license_server.settings import RateLimitSettings

    limited = settings.model_copy(update={"rate_limit": RateLimitSettings(per_ip="2/minute")})
    client = await aiohttp_client(create_app(limited))
    runtime = client.app[RUNTIME]
    await product(runtime, whmcs_secret=SECRET)
    _, key = await issue(runtime)
    for _ in range(2):
        assert (await check(client, key))[0].status == 200
    response, body = await check(client, key)
    assert (response.status, body) == (429, b"")  # the sample falls back to its local key
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Policy"] == '"per-ip";q=2;w=60'
    assert (await attempts(runtime))[-1]["result"] == "rate_limited"

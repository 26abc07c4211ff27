"""Real PHP modules written like WHMCS's `check_license()` sample against the real server.

`POST /modules/servers/licensing/verify.php` must answer modules that embed the WHMCS
Licensing Addon's sample code unchanged (DESIGN.md "WHMCS Licensing Addon compatibility").
Here the server runs as an operator starts it (`run.py serve`, a real process on a free port,
seeded beforehand through the runtime) and each check is one run of
`tests/php/whmcs_style_client.php`, a module in the sample's style: local key, curl post of a
hand-built query string, the sample's regex, the md5hash check. It prints one JSON line with
what it parsed and the raw body. Whether a run reached the server is read from the attempt log
(`verification_attempts`), which the server commits before it answers.

The server's verify cache is off (`LICENSE_SERVER_VERIFY_CACHE_SECONDS=0`) and every scenario
has its own license, so no test depends on another's bindings and nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.licensing.whmcs_import import import_export
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.fixtures.whmcs_export import ZERO_DATE, write_csv
from tests.server_process import ServerProcess
from tests.services import php_modules
from tests.store_helpers import query, query_dicts

ROOT = Path(__file__).resolve().parent.parent
PHP_DIR = ROOT / "tests" / "php"
CLIENT = PHP_DIR / "whmcs_style_client.php"
COMPAT_VERIFY = PHP_DIR / "compat_verify.php"
XML_CLIENT = PHP_DIR / "xml_parse_client.php"
PHP = shutil.which("php")


PHP_MODULES = php_modules()
pytestmark = pytest.mark.skipif(
    not {"curl", "sodium", "json"} <= PHP_MODULES, reason="needs php-cli with curl and sodium"
)

SECRET = "vendor-s3cret"  # the product's WHMCS secret, shipped inside every copy of the module
PRODUCT = ProductSpec(code="whmcsmod", name="WHMCS Module", seats=1, whmcs_secret=SECRET)
LICENSEE = "Smith & Sons"
LICENSEE_AS_SENT = "Smith &amp; Sons"  # escaped on the wire; the sample's regex keeps it so
EMAIL = "a@example.org"
# The module's identity: SERVER_NAME, SERVER_ADDR, dirname(__FILE__).
DOMAIN = "www.shop.example.com"
VALID_DOMAIN = "shop.example.com,www.shop.example.com"
IP = "203.0.113.10"
DIRECTORY = "/home/smith/public_html/modules/addons/my mod+v2"  # urlencode: "+" and "%2B"
EXPIRED_DUE = dt.date(2099, 12, 31)
# A key of the WHMCS addon, imported: not a signed key, and it contains "+".
LEGACY_KEY = "Leased-a1b2+c3d4e5f6"
LEGACY_SERVICE_ID = 4242
UNKNOWN_KEY = "Leased-0000000000nosuchkey"
WHMCS_TAGS = [
    "status",
    "registeredname",
    "companyname",
    "email",
    "serviceid",
    "productid",
    "productname",
    "regdate",
    "nextduedate",
    "billingcycle",
    "validdomain",
    "validip",
    "validdirectory",
    "configoptions",
    "customfields",
    "addons",
    "md5hash",
]
SIGNATURE_TAG = "licensesignature"
# One license per scenario, so that no test sees another's bindings.
SCENARIOS = (
    "active",
    "local_key",
    "bindings",
    "expired",
    "suspended",
    "wrong_secret",
    "trimmed",
    "raw_key",
    "signature",
    "xml",
)


@dataclass(frozen=True)
class Issued:
    id: int
    key: str


@dataclass(frozen=True)
class Server:
    url: str
    database: Path
    jwks: str
    product_id: int
    seeded_on: dt.date
    licenses: dict[str, Issued]


# ------------------------------------------------------------------ the server


async def _seed(settings: Settings, export: Path) -> tuple[int, dict[str, Issued]]:
    async with open_runtime(settings) as rt:
        product = await rt.licenses.create_product(PRODUCT)
        issued = {}
        for name in SCENARIOS:
            spec = LicenseSpec(
                product=PRODUCT.code,
                licensee=LICENSEE,
                email=EMAIL,
                expires=EXPIRED_DUE if name == "expired" else None,
            )
            license, key = await rt.licenses.issue(spec)
            issued[name] = Issued(license.id, key)
        await rt.licenses.apply(issued["expired"].id, Action.EXPIRE)
        await rt.licenses.apply(issued["suspended"].id, Action.SUSPEND)
        # "Reissued" in WHMCS: nothing bound, the next check binds (imported as pending).
        row = {
            "id": 1,
            "serviceid": LEGACY_SERVICE_ID,
            "addon_id": 0,
            "licensekey": LEGACY_KEY,
            "validdomain": "",
            "validip": "",
            "validdirectory": "",
            "reissues": 1,
            "status": "Reissued",
            "lastaccess": ZERO_DATE,
        }
        report = await import_export(rt.licenses, write_csv(export, [row]), PRODUCT.code)
        assert (report.imported, report.bad) == (1, [])
        legacy = await rt.licenses.license_by_key(LEGACY_KEY)
        issued["legacy"] = Issued(legacy.id, LEGACY_KEY)
    return product.id, issued


@pytest.fixture(scope="module")
def server(tmp_path_factory, make_database) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("whmcs-php")
    database, keys_dir = make_database(), home / "keys"
    seeded_on = dt.datetime.now(dt.UTC).date()
    product_id, licenses = asyncio.run(
        _seed(Settings(database=database, keys_dir=keys_dir), home / "mod_licensing.csv")
    )
    env = {"LICENSE_SERVER_VERIFY_CACHE_SECONDS": "0"}
    with ServerProcess(database, keys_dir, home, env) as process:
        jwks = process.get("/.well-known/jwks.json").decode()
        yield Server(process.url, database, jwks, product_id, seeded_on, licenses)


# ------------------------------------------------------------------ the attempt log


def all_attempts(server: Server) -> int:
    return query(server.database, "SELECT COUNT(*) FROM verification_attempts")[0][0]


def attempts(server: Server, license: Issued) -> int:
    sql = "SELECT COUNT(*) FROM verification_attempts WHERE license_id = ?"
    return query(server.database, sql, (license.id,))[0][0]


def last_attempt(server: Server) -> dict[str, Any]:
    sql = "SELECT * FROM verification_attempts ORDER BY id DESC LIMIT 1"
    return query_dicts(server.database, sql)[0]


# ------------------------------------------------------------------ running PHP


def run_php(script: Path, *args: str) -> dict[str, Any]:
    assert PHP is not None
    done = subprocess.run(
        [PHP, "-d", "error_reporting=-1", "-d", "display_errors=stderr", str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # no notice, warning or deprecation
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def check(server: Server, key: str, **overrides: Any) -> dict[str, Any]:
    """One `check_license()` of the WHMCS-style module; returns what it printed."""
    config = {
        "url": server.url + "/",
        "secret": SECRET,
        "licensekey": key,
        "domain": DOMAIN,
        "ip": IP,
        "dir": DIRECTORY,
        **overrides,
    }
    return run_php(CLIENT, json.dumps(config))


def raw_body(result: dict[str, Any]) -> bytes:
    assert result["remotecheck"] is True
    return base64.b64decode(result["raw"])


def wire_tags(body: bytes) -> list[tuple[str, str]]:
    """The answer line by line: every line must be one `<tag>value</tag>`."""
    lines = body.decode().split("\n")
    tags = []
    for line in lines:
        match = re.fullmatch(r"<([a-z0-9_]+)>([^<\n]*)</\1>", line)
        assert match, f"not a tag line: {line!r} in {body!r}"
        tags.append((match.group(1), match.group(2)))
    return tags


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # what WHMCS modules check


def parsed(result: dict[str, Any]) -> dict[str, Any]:
    """The tags the module's regex found (the client's own bookkeeping fields dropped)."""
    own = {"remotecheck", "localkey", "raw", "check_token", "http_code", "checkdate"}
    return {k: v for k, v in result.items() if k not in own}


def assert_signed_invalid_alone(result: dict[str, Any], **extra: str) -> None:
    """Status Invalid plus `extra` tags, the signature tag, and nothing else of WHMCS's."""
    assert result["http_code"] == 200
    values = parsed(result)
    signature = values.pop(SIGNATURE_TAG)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}", signature)
    assert values == {"status": "Invalid", **extra}
    assert result["localkey"] is None
    assert [name for name, _ in wire_tags(raw_body(result))] == [
        "status",
        *extra,
        SIGNATURE_TAG,
    ]


def compat_verified(server: Server, body: bytes, check_token: str) -> bool:
    request = {
        "raw": base64.b64encode(body).decode(),
        "check_token": check_token,
        "jwks": server.jwks,
    }
    answer = run_php(COMPAT_VERIFY, json.dumps(request))
    assert answer["kids"]  # the JWKS did carry Ed25519 keys
    return answer["verified"]


# ------------------------------------------------------------------ Active and the local key


def test_active_binds_then_the_local_key_validates_offline(server):
    license = server.licenses["active"]
    before = all_attempts(server)
    assert attempts(server, license) == 0

    first = check(server, license.key)
    assert first["remotecheck"] is True
    assert first["http_code"] == 200
    assert first["status"] == "Active"
    assert "description" not in first  # no "MD5 Checksum Verification Failed"
    # The raw value is XML-escaped; the sample's regex hands the module the escaped text.
    assert first["registeredname"] == LICENSEE_AS_SENT
    assert b"<registeredname>Smith &amp; Sons</registeredname>\n" in raw_body(first)
    token = first["check_token"]
    assert re.fullmatch(r"[0-9]{10}[0-9a-f]{32}", token)  # time() . md5(...): 42 characters
    assert first["md5hash"] == md5(SECRET + token)
    assert first["validdomain"] == VALID_DOMAIN
    assert first["validip"] == IP
    assert first["validdirectory"] == DIRECTORY
    assert first["email"] == EMAIL
    assert first["productname"] == PRODUCT.name
    assert first["productid"] == str(server.product_id)
    assert first["serviceid"] == str(license.id)
    assert first["nextduedate"] == "0000-00-00"
    assert first["billingcycle"] == "One Time"
    assert first["regdate"] in {
        server.seeded_on.isoformat(),
        dt.datetime.now(dt.UTC).date().isoformat(),
    }
    # Empty tags are on the wire but vanish for the regex.
    assert [name for name, _ in wire_tags(raw_body(first))] == [*WHMCS_TAGS, SIGNATURE_TAG]
    for empty in ("companyname", "configoptions", "customfields", "addons"):
        assert empty not in first
    assert isinstance(first["localkey"], str)
    assert all(len(line) <= 80 for line in first["localkey"].split("\n"))
    # The check reached the server once and bound the license there.
    assert all_attempts(server) == before + 1
    assert attempts(server, license) == 1
    logged = last_attempt(server)
    assert (logged["license_id"], logged["result"], logged["reason"]) == (
        license.id,
        "active",
        "activated",
    )
    assert (logged["domain_raw"], logged["reported_ip"], logged["directory"]) == (
        DOMAIN,
        IP,
        DIRECTORY,
    )

    # Next page load: the local key is valid for this domain, IP and directory: no request.
    second = check(server, license.key, localkey=first["localkey"])
    assert second["remotecheck"] is False
    assert second["raw"] is None
    assert second["status"] == "Active"
    assert second["registeredname"] == LICENSEE_AS_SENT
    assert second["validdomain"] == VALID_DOMAIN
    assert all_attempts(server) == before + 1
    assert attempts(server, license) == 1


def test_a_local_key_elsewhere_or_altered_makes_the_module_phone_home(server):
    license = server.licenses["local_key"]
    first = check(server, license.key)
    assert (first["status"], first["remotecheck"]) == ("Active", True)
    local_key = first["localkey"]
    assert attempts(server, license) == 1

    elsewhere = check(server, license.key, localkey=local_key, domain="other.example.net")
    assert elsewhere["remotecheck"] is True
    assert_signed_invalid_alone(elsewhere, message="Domain Invalid")
    assert attempts(server, license) == 2

    moved = check(server, license.key, localkey=local_key, dir="/srv/www/modules/addons/my mod")
    assert moved["remotecheck"] is True
    assert_signed_invalid_alone(moved, message="Directory Invalid")
    assert attempts(server, license) == 3

    # One character of the payload changed (first line of 80): the md5 suffix no longer matches.
    swapped = "A" if local_key[40] != "A" else "B"
    altered = local_key[:40] + swapped + local_key[41:]
    again = check(server, license.key, localkey=altered)
    assert (again["remotecheck"], again["status"]) == (True, "Active")
    assert attempts(server, license) == 4


# ------------------------------------------------------------------ Invalid


def test_unknown_and_forged_keys_get_status_invalid_alone(server):
    before = all_attempts(server)
    unknown = check(server, UNKNOWN_KEY)
    assert_signed_invalid_alone(unknown)
    assert raw_body(unknown).startswith(b"<status>Invalid</status>\n<licensesignature>")
    logged = last_attempt(server)
    assert (logged["license_id"], logged["result"], logged["reason"]) == (
        None,
        "invalid",
        "unknown_key",
    )

    genuine = server.licenses["active"].key
    forged = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    assert_signed_invalid_alone(check(server, forged))
    assert last_attempt(server)["reason"] == "bad_signature"
    assert all_attempts(server) == before + 2


def test_binding_mismatches_name_the_field(server):
    license = server.licenses["bindings"]
    bound = check(server, license.key)
    assert bound["status"] == "Active"

    other_domain = check(server, license.key, domain="other.example.net")
    assert_signed_invalid_alone(other_domain, message="Domain Invalid")

    other_ip = check(server, license.key, ip="198.51.100.7")
    assert_signed_invalid_alone(other_ip, message="IP Address Invalid")

    other_dir = check(server, license.key, dir="/home/smith/public_html/modules/addons/other")
    assert_signed_invalid_alone(other_dir, message="Directory Invalid")

    # The first identity still holds the binding, echoed as it was sent the first time.
    again = check(server, license.key)
    assert again["status"] == "Active"
    assert (again["validdomain"], again["validip"], again["validdirectory"]) == (
        VALID_DOMAIN,
        IP,
        DIRECTORY,
    )
    assert attempts(server, license) == 5


# ------------------------------------------------------------------ Expired, Suspended


@pytest.mark.parametrize(
    ("scenario", "wire", "due", "cycle"),
    [
        ("expired", "Expired", EXPIRED_DUE.isoformat(), None),  # empty billingcycle vanishes
        ("suspended", "Suspended", "0000-00-00", "One Time"),
    ],
)
def test_expired_and_suspended_carry_the_full_tag_set(server, scenario, wire, due, cycle):
    license = server.licenses[scenario]
    result = check(server, license.key)
    assert result["status"] == wire
    assert "description" not in result  # md5hash present and right for the real secret
    assert result["md5hash"] == md5(SECRET + result["check_token"])
    assert result["localkey"] is None  # only Active answers become a local key
    body = raw_body(result)
    assert [name for name, _ in wire_tags(body)] == [*WHMCS_TAGS, SIGNATURE_TAG]
    assert result["registeredname"] == LICENSEE_AS_SENT
    assert result["email"] == EMAIL
    assert result["serviceid"] == str(license.id)
    assert result["productname"] == PRODUCT.name
    assert result["nextduedate"] == due
    assert result.get("billingcycle") == cycle
    assert (result["validdomain"], result["validip"], result["validdirectory"]) == (
        VALID_DOMAIN,
        IP,
        DIRECTORY,
    )
    assert last_attempt(server)["result"] == scenario


# ------------------------------------------------------------------ md5hash


def test_a_wrong_secret_fails_the_md5_checksum(server):
    license = server.licenses["wrong_secret"]
    result = check(server, license.key, secret="not-the-vendor-secret")
    assert result["status"] == "Invalid"
    assert result["description"] == "MD5 Checksum Verification Failed"
    assert result["localkey"] is None
    # The server did say Active, with md5hash computed from the real secret.
    wire = dict(wire_tags(raw_body(result)))
    assert wire["status"] == "Active"
    assert wire["md5hash"] == md5(SECRET + result["check_token"])
    assert wire["md5hash"] != md5("not-the-vendor-secret" + result["check_token"])


# ------------------------------------------------------------------ older copies of the sample


def test_a_trimmed_client_posting_only_key_and_domain(server):
    license = server.licenses["trimmed"]
    result = check(server, license.key, trimmed=True)
    assert result["status"] == "Active"
    assert "description" not in result  # md5hash = md5(secret . "") matches the empty token
    assert result["check_token"] == ""
    assert result["md5hash"] == md5(SECRET)
    assert result["validdomain"] == VALID_DOMAIN
    assert result["validip"] == "127.0.0.1"  # the caller's address, since no ip was posted
    assert "validdirectory" not in result  # empty, so invisible to the regex
    logged = last_attempt(server)
    assert (logged["license_id"], logged["reported_ip"], logged["directory"]) == (
        license.id,
        "",
        "",
    )
    assert logged["source_ip"] == "127.0.0.1"


def test_a_key_posted_without_url_encoding(server):
    signed = server.licenses["raw_key"]
    assert re.fullmatch(r"[A-Z0-9-]+", signed.key)
    result = check(server, signed.key, raw_key=True)
    assert result["status"] == "Active"
    assert result["serviceid"] == str(signed.id)

    # An imported WHMCS key with "+": posted raw, "+" must not turn into a space.
    legacy = server.licenses["legacy"]
    raw = check(server, legacy.key, raw_key=True)
    assert raw["status"] == "Active"
    assert "description" not in raw
    assert raw["serviceid"] == str(LEGACY_SERVICE_ID)
    assert raw["registeredname"] == f"WHMCS service #{LEGACY_SERVICE_ID}"
    assert (raw["validdomain"], raw["validip"], raw["validdirectory"]) == (
        VALID_DOMAIN,
        IP,
        DIRECTORY,
    )
    encoded = check(server, legacy.key)  # "%2B": the same key
    assert encoded["status"] == "Active"
    assert encoded["serviceid"] == str(LEGACY_SERVICE_ID)
    assert attempts(server, legacy) == 2
    # Controls: the lookup is exact, and a space (what a "+"-as-space decoder would have
    # made of the raw key, sent here as "%20") is not the "+" of this key.
    assert_signed_invalid_alone(check(server, legacy.key.replace("+", "-"), raw_key=True))
    assert last_attempt(server)["reason"] == "unknown_key"
    assert_signed_invalid_alone(check(server, legacy.key.replace("+", "%20"), raw_key=True))
    assert last_attempt(server)["reason"] == "unknown_key"
    assert attempts(server, legacy) == 2


# ------------------------------------------------------------------ the signature tag


def test_the_signature_tag_verifies_for_the_real_check_token_only(server):
    license = server.licenses["signature"]
    result = check(server, license.key)
    assert result["status"] == "Active"
    body, token = raw_body(result), result["check_token"]
    assert compat_verified(server, body, token) is True

    other_token = str(int(token[:10]) + 1) + token[10:]
    assert compat_verified(server, body, other_token) is False
    assert compat_verified(server, body, "") is False
    tampered = body.replace(b"<status>Active</status>", b"<status>Expired</status>")
    assert tampered != body
    assert compat_verified(server, tampered, token) is False
    renamed = body.replace(b"Smith &amp; Sons", b"Smith &amp; Sins")
    assert renamed != body
    assert compat_verified(server, renamed, token) is False

    # Refusals are signed too: an attacker cannot forge an Invalid to switch a module off.
    refused = check(server, UNKNOWN_KEY)
    assert refused["status"] == "Invalid"
    assert compat_verified(server, raw_body(refused), refused["check_token"]) is True
    assert compat_verified(server, raw_body(refused), token) is False


# ------------------------------------------------------------------ XML-parsing modules


def test_the_answer_parses_as_xml_inside_a_root_element(server):
    if "simplexml" not in PHP_MODULES:
        pytest.skip("needs PHP's SimpleXML extension (Debian package php-xml)")
    license = server.licenses["xml"]
    result = check(server, license.key)
    assert result["status"] == "Active"
    body = raw_body(result)
    assert b"<?xml" not in body
    assert b"Smith &amp; Sons" in body and b"Smith & Sons" not in body

    xml = run_php(XML_CLIENT, base64.b64encode(body).decode())
    assert xml["errors"] == []
    assert xml["parsed"] is True
    fields = xml["fields"]
    assert fields["status"] == "Active"
    assert fields["registeredname"] == LICENSEE  # the XML parser decodes &amp;
    assert fields["validdirectory"] == DIRECTORY
    assert fields["md5hash"] == md5(SECRET + result["check_token"])
    assert list(fields) == [*WHMCS_TAGS, SIGNATURE_TAG]
    # Python's parser agrees.
    root = ET.fromstring(b"<root>" + body + b"</root>")
    assert root.findtext("registeredname") == LICENSEE

    # Control: the same answer with a bare "&" is what would break such a module.
    unescaped = body.replace(b"Smith &amp; Sons", b"Smith & Sons")
    broken = run_php(XML_CLIENT, base64.b64encode(unescaped).decode())
    assert broken["parsed"] is False
    assert broken["errors"]

"""The shipped PHP client (clients/php/LicenseClient.php) against the real server, over TCP.

The server runs as an operator would start it (`run.py serve`, a real process on a free port);
products and licenses are seeded beforehand through the runtime. Every check is one run of
`php clients/php/tests/run_checks.php CONFIG`, which prints one JSON line. Whether a run reached
the server is proved from the attempt log (`verification_attempts`), which the server commits
before it answers, so the counts are exact. A small HTTP proxy in this file plays the man in the
middle (altered body, stripped or wrong signature, replayed answer, foreign signing key); such an
answer proves nothing and must be handled like an outage, flagged unverified. The PHP clock is
moved (`now`) only while the server is unreachable or the answer is spoilt anyway: a live
answer's `server_time` is checked against that clock.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.server_process import ServerProcess
from tests.services import php_modules
from tests.store_helpers import query
from tests.verify_helpers import FAILED_CHECKS

ROOT = Path(__file__).resolve().parent.parent
RUN_CHECKS = ROOT / "clients" / "php" / "tests" / "run_checks.php"
PHP = shutil.which("php")
# Every notice, warning or deprecation goes to stderr, which must stay empty.
PHP_COMMAND = (PHP or "php", "-d", "error_reporting=-1", "-d", "display_errors=stderr")


pytestmark = pytest.mark.skipif(
    not {"curl", "sodium", "json"} <= php_modules(), reason="needs php-cli with curl and sodium"
)

PRODUCT = ProductSpec(
    code="phpmod",
    name="PHP Module",
    seats=1,
    local_key_days=1,
    grace_days=2,
    features=("pro",),
)
# One license per scenario, so that no test sees another's bindings or cache.
SCENARIOS = (
    "active",
    "forge_base",
    "suspended",
    "revoked",
    "expired",
    "seats",
    "product",
    "tamper",
    "replay",
    "resign",
    "outage",
    "cron",
    "www",
    "idn",
    "ipv6",
    "unv-strip",
    "unv-wrong_signature",
    "unv-tamper",
    "unv-replay",
    "unv-stale",
)
UNKNOWN_KEY = "NOT-A-KEY-OF-THIS-SERVER-0000"


@dataclass(frozen=True)
class Issued:
    id: int
    key: str


@dataclass(frozen=True)
class Server:
    url: str
    database: Path
    public_keys: dict[str, str]
    licenses: dict[str, Issued]


# ------------------------------------------------------------------ the server


async def _seed(settings: Settings) -> dict[str, Issued]:
    expires_soon = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
    extra: dict[str, dict[str, Any]] = {
        "expired": {"expires": expires_soon},
        "seats": {"seats": 1},
        "idn": {"domains": ("straße.de",)},
    }
    async with open_runtime(settings) as rt:
        await rt.licenses.create_product(PRODUCT)
        issued = {}
        for name in SCENARIOS:
            spec = LicenseSpec(
                product=PRODUCT.code,
                licensee=f"Licensee {name}",
                email="buyer@example.org",
                **extra.get(name, {}),
            )
            license, key = await rt.licenses.issue(spec)
            issued[name] = Issued(license.id, key)
        await rt.licenses.apply(issued["suspended"].id, Action.SUSPEND)
        await rt.licenses.apply(issued["revoked"].id, Action.REVOKE)
        await rt.licenses.apply(issued["expired"].id, Action.EXPIRE)
    return issued


@pytest.fixture(scope="module")
def server(tmp_path_factory, make_database) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("php-server")
    database, keys_dir = make_database(), home / "keys"
    licenses = asyncio.run(_seed(Settings(database=database, keys_dir=keys_dir)))
    with ServerProcess(database, keys_dir, home) as process:
        # The vendor fetches the JWKS once and pastes kid => x into the module.
        jwks = json.loads(process.get("/.well-known/jwks.json"))
        public_keys = {k["kid"]: k["x"] for k in jwks["keys"] if k["crv"] == "Ed25519"}
        assert public_keys
        yield Server(process.url, database, public_keys, licenses)


# ------------------------------------------------------------------ the attempt log


def attempts(server: Server, license: Issued) -> int:
    sql = "SELECT COUNT(*) FROM verification_attempts WHERE license_id = ?"
    return query(server.database, sql, (license.id,))[0][0]


def keyless_attempts(server: Server, reason: str) -> int:
    sql = "SELECT COUNT(*) FROM verification_attempts WHERE license_id IS NULL AND reason = ?"
    return query(server.database, sql, (reason,))[0][0]


def all_attempts(server: Server) -> int:
    return query(server.database, "SELECT COUNT(*) FROM verification_attempts")[0][0]


def last_attempt(server: Server, license: Issued) -> tuple[str, str, str, str]:
    sql = (
        "SELECT result, reason, domain_raw, domain FROM verification_attempts "
        "WHERE license_id = ? ORDER BY id DESC LIMIT 1"
    )
    return query(server.database, sql, (license.id,))[0]


# ------------------------------------------------------------------ running the PHP client


class Php:
    """Runs run_checks.php with a config file; every result line is parsed and checked."""

    def __init__(self, server: Server, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.runs = 0

    def check(self, license_key: str, cache: Path, **options: Any) -> dict[str, Any]:
        config = {
            "server_url": self.server.url,
            "public_keys": self.server.public_keys,
            "license_key": license_key,
            "cache_path": str(cache),
            "timeout": 10,
            **options,
        }
        self.runs += 1
        config_file = self.tmp_path / f"config-{self.runs}.json"
        config_file.write_text(json.dumps(config))
        done = subprocess.run(
            [*PHP_COMMAND, str(RUN_CHECKS), str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""  # no notice, warning or deprecation
        lines = done.stdout.splitlines()
        assert len(lines) == 1, done.stdout
        result = json.loads(lines[0])
        assert list(result) == ["status", "reason", "from_cache", "message", "unverified"]
        assert result["message"]
        return result


@pytest.fixture
def php(server, tmp_path) -> Php:
    return Php(server, tmp_path)


def outcome(result: dict[str, Any]) -> tuple[str, str, bool]:
    return result["status"], result["reason"], result["from_cache"]


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def lkh(license_key: str) -> str:
    digest = hashlib.sha256(license_key.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def read_cache(cache: Path) -> dict[str, Any]:
    return json.loads(cache.read_text())


def local_key_claims(cache: Path) -> dict[str, Any]:
    token = read_cache(cache)["local_key"]
    assert isinstance(token, str)
    return json.loads(b64url_decode(token.split(".")[1]))


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A port bound but not listening: every connection is refused at once, nobody answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# ------------------------------------------------------------------ active and cached


def test_active_then_served_from_cache_without_a_request(server, php, tmp_path):
    license = server.licenses["active"]
    cache = tmp_path / "license.cache.json"
    assert attempts(server, license) == 0

    first = php.check(license.key, cache, domain="https://www.Shop-Active.example.com/whmcs/")
    assert outcome(first) == ("active", "activated", False)
    assert attempts(server, license) == 1
    assert last_attempt(server, license) == (
        "active",
        "activated",
        "shop-active.example.com",
        "shop-active.example.com",
    )
    stored = read_cache(cache)
    assert (stored["lkh"], stored["domain"]) == (lkh(license.key), "shop-active.example.com")
    assert stored["decision"]["status"] == "active"
    assert stored["backoff"] is None
    claims = local_key_claims(cache)
    assert claims["domain"] == "shop-active.example.com"
    assert claims["lkh"] == lkh(license.key)
    assert claims["aud"] == PRODUCT.code
    assert claims["exp"] - claims["iat"] == PRODUCT.local_key_days * 86400

    second = php.check(license.key, cache, domain="https://www.Shop-Active.example.com/whmcs/")
    assert outcome(second) == ("active", "activated", True)
    assert attempts(server, license) == 1  # no request reached the server

    # The product option: sent, and the cached local key's `aud` matches it.
    third = php.check(license.key, cache, domain="shop-active.example.com", product="phpmod")
    assert outcome(third) == ("active", "activated", True)
    assert attempts(server, license) == 1


# ------------------------------------------------------------------ refusals


REFUSALS = {
    # name: (license scenario or None, domain, extra options, status, reason)
    "unknown_key": (None, "shop-unknown.example.com", {}, "invalid", "unknown_key"),
    "forged_key": (None, "shop-forged.example.com", {}, "invalid", "bad_signature"),
    "suspended": ("suspended", "shop-suspended.example.com", {}, "suspended", "suspended"),
    "revoked": ("revoked", "shop-revoked.example.com", {}, "revoked", "revoked"),
    "expired": ("expired", "shop-expired.example.com", {}, "expired", "expired"),
    "product_mismatch": (
        "product",
        "shop-product.example.com",
        {"product": "othermod"},
        "invalid",
        "product_mismatch",
    ),
}


def forged(key: str) -> str:
    """The key with one body character changed: still signed-shaped, no longer genuine."""
    prefix, body = key.split("-", 1)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    at = len(body) // 2  # inside the signature, far from the version byte and padding bits
    changed = alphabet[(alphabet.index(body[at]) + 7) % len(alphabet)]
    forged = f"{prefix}-{body[:at]}{changed}{body[at + 1 :]}"
    assert forged != key and len(forged) == len(key)
    return forged


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_is_reported_then_cached_with_back_off(server, php, tmp_path, name):
    scenario, domain, options, status, reason = REFUSALS[name]
    if name == "unknown_key":
        key, count = UNKNOWN_KEY, lambda: keyless_attempts(server, "unknown_key")
    elif name == "forged_key":
        key = forged(server.licenses["forge_base"].key)
        count = lambda: keyless_attempts(server, "bad_signature")  # noqa: E731
    else:
        license = server.licenses[scenario]
        key, count = license.key, lambda: attempts(server, license)
    cache = tmp_path / "cache.json"
    before = count()

    first = php.check(key, cache, domain=domain, **options)
    assert outcome(first) == (status, reason, False)
    assert count() == before + 1
    if scenario is not None:
        assert last_attempt(server, server.licenses[scenario])[:2] == (status, reason)
    stored = read_cache(cache)
    assert stored["local_key"] is None
    assert stored["decision"]["status"] == status
    assert stored["backoff"]["kind"] == "refused"

    # Within refused_retry (default one hour) the refusal comes from the cache, no request.
    again = php.check(key, cache, domain=domain, **options)
    assert outcome(again) == (status, reason, True)
    assert count() == before + 1


def test_product_mismatch_is_the_product_option(server, php, tmp_path):
    """Control for the mismatch case: the same license checked for its own product is active."""
    license = server.licenses["product"]
    result = php.check(
        license.key, tmp_path / "own.json", domain="shop-product.example.com", product="phpmod"
    )
    assert outcome(result) == ("active", "activated", False)
    assert last_attempt(server, license) == (
        "active",
        "activated",
        "shop-product.example.com",
        "shop-product.example.com",
    )


def test_seat_limit(server, php, tmp_path):
    license = server.licenses["seats"]
    first = php.check(license.key, tmp_path / "a.json", domain="shop-a.example.com")
    assert outcome(first) == ("active", "activated", False)
    assert attempts(server, license) == 1

    other = php.check(license.key, tmp_path / "b.json", domain="shop-b.example.net")
    assert outcome(other) == ("invalid", "seat_limit", False)
    assert attempts(server, license) == 2
    assert last_attempt(server, license) == (
        "invalid",
        "seat_limit",
        "shop-b.example.net",
        "shop-b.example.net",
    )

    again = php.check(license.key, tmp_path / "b.json", domain="shop-b.example.net")
    assert outcome(again) == ("invalid", "seat_limit", True)
    # The bound installation is unaffected (and still served from its own cache).
    bound = php.check(license.key, tmp_path / "a.json", domain="shop-a.example.com")
    assert outcome(bound) == ("active", "activated", True)
    assert attempts(server, license) == 2


# ------------------------------------------------------------------ a man in the middle


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: ClassVar[Proxy]

    def do_POST(self) -> None:
        proxy = self.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if proxy.mode == "replay":
            assert proxy.captured is not None
            answer, signature = proxy.captured
        else:
            answer, signature = proxy.forward(self.path, body, self.headers)
            if proxy.mode == "pass":
                proxy.captured = (answer, signature)
            elif proxy.mode == "tamper":
                altered = answer.replace(b'"status":"active"', b'"status":"Active"', 1)
                proxy.altered += altered != answer
                answer = altered
            elif proxy.mode == "strip":
                signature = ""
            elif proxy.mode == "wrong_signature":
                # The genuine key id, but a signature only the rogue key could have made.
                kid = signature.split('keyid="', 1)[1].split('"', 1)[0]
                raw = proxy.rogue_key.sign(answer)
                signature = (
                    f'keyid="{kid}", algorithm="ed25519", '
                    f'signature="{base64.b64encode(raw).decode()}"'
                )
            elif proxy.mode == "resign":
                raw = proxy.rogue_key.sign(answer)
                signature = (
                    f'keyid="{proxy.rogue_kid}", algorithm="ed25519", '
                    f'signature="{base64.b64encode(raw).decode()}"'
                )
        proxy.answered += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if signature:
            self.send_header("License-Signature", signature)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


class Proxy:
    """HTTP proxy between the PHP client and the server: pass, tamper, replay or resign."""

    rogue_kid = "rogue-1"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.mode = "pass"
        self.captured: tuple[bytes, str] | None = None
        self.altered = 0
        self.answered = 0
        self.rogue_key = Ed25519PrivateKey.generate()
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def forward(self, path: str, body: bytes, headers) -> tuple[bytes, str]:
        conn = http.client.HTTPConnection(self.upstream, timeout=10)
        try:
            conn.request("POST", path, body, {"Content-Type": headers.get("Content-Type", "")})
            response = conn.getresponse()
            answer = response.read()
            assert response.status == 200, answer
            return answer, response.getheader("License-Signature", "")
        finally:
            conn.close()

    def rogue_public_x(self) -> str:
        raw = self.rogue_key.public_key().public_bytes_raw()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def proxy(server) -> Iterator[Proxy]:
    proxy = Proxy(server.url)
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.httpd.shutdown()
        proxy.httpd.server_close()
        proxy.thread.join(timeout=10)


def test_tampered_body_is_no_answer(server, php, proxy, tmp_path):
    license = server.licenses["tamper"]
    cache = tmp_path / "cache.json"
    proxy.mode = "tamper"
    result = php.check(license.key, cache, domain="shop-tamper.example.com", server_url=proxy.url)
    assert outcome(result) == ("unreachable", "tampered", False) and result["unverified"]
    assert proxy.altered == 1  # the genuine answer was "active"; one byte was changed
    assert attempts(server, license) == 1
    assert last_attempt(server, license)[:2] == ("active", "activated")
    stored = read_cache(cache)
    assert stored["local_key"] is None and stored["decision"] is None
    assert stored["backoff"]["kind"] == "verify"

    # Backed off like an outage: no second request while the back-off runs.
    again = php.check(license.key, cache, domain="shop-tamper.example.com", server_url=proxy.url)
    assert outcome(again) == ("unreachable", "tampered", True) and again["unverified"]
    assert proxy.answered == 1 and attempts(server, license) == 1

    # Control: the same check without the proxy is accepted (force skips the back-off).
    direct = php.check(license.key, cache, domain="shop-tamper.example.com", force=True)
    assert outcome(direct) == ("active", "ok", False) and not direct["unverified"]
    assert attempts(server, license) == 2


def test_replayed_answer_is_no_answer(server, php, proxy, tmp_path):
    license = server.licenses["replay"]
    domain = "shop-replay.example.com"
    proxy.mode = "pass"
    genuine = php.check(license.key, tmp_path / "a.json", domain=domain, server_url=proxy.url)
    assert outcome(genuine) == ("active", "activated", False)
    assert proxy.captured is not None
    assert attempts(server, license) == 1

    # A genuine, signed, fresh "active" answer, but for the previous request's nonce.
    proxy.mode = "replay"
    cache = tmp_path / "b.json"
    replayed = php.check(license.key, cache, domain=domain, server_url=proxy.url)
    assert outcome(replayed) == ("unreachable", "bad_nonce", False) and replayed["unverified"]
    assert proxy.answered == 2
    assert attempts(server, license) == 1  # the replay never reached the server
    assert read_cache(cache)["local_key"] is None


def test_answer_signed_with_an_unknown_key_id_is_no_answer(server, php, proxy, tmp_path):
    license = server.licenses["resign"]
    domain = "shop-resign.example.com"
    proxy.mode = "resign"
    cache = tmp_path / "cache.json"
    result = php.check(license.key, cache, domain=domain, server_url=proxy.url)
    assert outcome(result) == ("unreachable", "unknown_key_id", False) and result["unverified"]
    assert attempts(server, license) == 1
    assert read_cache(cache)["local_key"] is None

    # Control: the same re-signed answer passes once the module ships the proxy's key, so the
    # refusal above is about the key id and nothing else.
    shipped = {**server.public_keys, proxy.rogue_kid: proxy.rogue_public_x()}
    accepted = php.check(
        license.key,
        tmp_path / "other.json",
        domain=domain,
        server_url=proxy.url,
        public_keys=shipped,
    )
    assert outcome(accepted) == ("active", "ok", False)
    assert attempts(server, license) == 2


@pytest.mark.parametrize("mode", list(FAILED_CHECKS))
def test_unverified_answer_is_handled_like_an_outage(server, php, proxy, tmp_path, mode):
    """Whoever can spoil one answer cannot switch the site off: cache, grace, unreachable."""
    license = server.licenses[f"unv-{mode}"]
    domain = f"shop-unv-{mode.replace('_', '-')}.example.com"
    reason = FAILED_CHECKS[mode]
    live = tmp_path / "live.json"
    proxy.mode = "pass"
    first = php.check(license.key, live, domain=domain, server_url=proxy.url, check_interval=3600)
    assert outcome(first) == ("active", "activated", False) and not first["unverified"]
    fetched_at, claims = read_cache(live)["fetched_at"], local_key_claims(live)
    proxy.mode = "pass" if mode == "stale" else mode
    # Moving the clock makes every live answer stale; other modes isolate their own check.
    skew = {} if mode == "stale" else {"max_clock_skew": 10**9}

    def check(now: int, cached: bool) -> dict[str, Any]:
        cache = tmp_path / f"at-{now}-{cached}.json"
        if cached and not cache.exists():
            shutil.copyfile(live, cache)
        return php.check(
            license.key, cache, domain=domain, server_url=proxy.url, check_interval=3600,
            now=now, **skew,
        )  # fmt: skip

    answered = proxy.answered
    # A valid local key cached (older than check_interval, so the client asks): active.
    valid = check(fetched_at + 3601, cached=True)
    assert outcome(valid) == ("active", reason, True) and valid["unverified"]
    # The same cache again: the back-off replays it without a request.
    assert outcome(check(fetched_at + 3601, cached=True)) == ("active", reason, True)
    # An expired local key inside its grace period: grace.
    grace = check(claims["exp"] + 1, cached=True)
    assert outcome(grace) == ("grace", reason, True) and grace["unverified"]
    # No usable local key: unreachable, never a refusal.
    nothing = check(fetched_at + 3601, cached=False)
    assert outcome(nothing) == ("unreachable", reason, False) and nothing["unverified"]
    too_old = check(claims["grace_until"] + 1, cached=True)
    assert outcome(too_old) == ("unreachable", reason, False) and too_old["unverified"]
    # Four requests for five checks (the back-off replayed one), and the server's word stands.
    assert proxy.answered == answered + 4
    assert last_attempt(server, license)[:2] in {("active", "activated"), ("active", "ok")}


def test_the_fake_server_self_test(tmp_path):
    """clients/php/tests/selftest.php: every branch against clients/php/tests/fake_server.php."""
    selftest = ROOT / "clients" / "php" / "tests" / "selftest.php"
    done = subprocess.run(
        [*PHP_COMMAND, str(selftest)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and " 0 failed" in done.stdout, done.stdout[-3000:] + done.stderr
    assert "FAIL" not in done.stdout


# ------------------------------------------------------------------ outages


def test_outage_cached_key_then_grace_then_unreachable(server, php, tmp_path, dead_url):
    license = server.licenses["outage"]
    domain = "shop-outage.example.com"
    live = tmp_path / "live.json"
    first = php.check(license.key, live, domain=domain, check_interval=3600)
    assert outcome(first) == ("active", "activated", False)
    assert attempts(server, license) == 1
    stored = read_cache(live)
    claims = local_key_claims(live)
    fetched_at, exp, grace_until = stored["fetched_at"], claims["exp"], claims["grace_until"]
    assert exp - claims["iat"] == PRODUCT.local_key_days * 86400
    assert grace_until - exp == PRODUCT.grace_days * 86400
    assert fetched_at + 3600 < exp

    def offline(now: int) -> dict[str, Any]:
        cache = tmp_path / f"at-{now}.json"
        shutil.copyfile(live, cache)  # each case starts from the same cached local key
        return php.check(
            license.key, cache, domain=domain, check_interval=3600, server_url=dead_url, now=now
        )

    # Fresh (younger than check_interval): no request at all, the server's state is moot.
    assert outcome(offline(fetched_at + 60)) == ("active", "activated", True)
    # Past check_interval but before exp: asks, cannot connect, the local key still holds.
    assert outcome(offline(fetched_at + 3601)) == ("active", "connect_failed", True)
    assert outcome(offline(exp - 1)) == ("active", "connect_failed", True)
    # Just after exp: grace, until grace_until.
    assert outcome(offline(exp)) == ("grace", "connect_failed", True)
    assert outcome(offline(exp + 1)) == ("grace", "connect_failed", True)
    assert outcome(offline(grace_until - 1)) == ("grace", "connect_failed", True)
    # Past grace_until: nothing may stand in for the server any more.
    assert outcome(offline(grace_until)) == ("unreachable", "connect_failed", False)
    assert outcome(offline(grace_until + 86400)) == ("unreachable", "connect_failed", False)
    assert attempts(server, license) == 1

    # The outage backs off: a second run at the same moment replays without trying again.
    cache = tmp_path / f"at-{exp + 1}.json"
    assert read_cache(cache)["backoff"]["kind"] == "outage"
    replay = php.check(
        license.key, cache, domain=domain, check_interval=3600, server_url=dead_url, now=exp + 1
    )
    assert outcome(replay) == ("grace", "connect_failed", True)


# ------------------------------------------------------------------ cron / CLI


def test_cron_without_server_name_uses_the_cached_domain(server, php, tmp_path):
    license = server.licenses["cron"]
    cache = tmp_path / "cache.json"
    before = all_attempts(server)

    # Cron before any web request: nothing known, nothing sent.
    nothing = php.check(license.key, cache)
    assert outcome(nothing) == ("invalid", "no_domain", False)
    assert all_attempts(server) == before
    assert not cache.exists()

    # A page load: the web server's SERVER_NAME gives the domain.
    web = php.check(license.key, cache, server_name="www.Cron-Shop.example.com")
    assert outcome(web) == ("active", "activated", False)
    assert attempts(server, license) == 1

    # Cron: no domain option, no SERVER_NAME; the cached local key's domain is used.
    cron = php.check(license.key, cache)
    assert outcome(cron) == ("active", "activated", True)
    assert attempts(server, license) == 1
    forced = php.check(license.key, cache, force=True)
    assert outcome(forced) == ("active", "ok", False)
    assert attempts(server, license) == 2

    domains = query(
        server.database,
        "SELECT domain_raw, domain FROM verification_attempts WHERE license_id = ?",
        (license.id,),
    )
    assert domains == [("cron-shop.example.com", "cron-shop.example.com")] * 2


# ------------------------------------------------------------------ domains as the server sees them


@pytest.mark.parametrize(
    ("scenario", "domain", "canonical", "reason"),
    [
        # The server strips "www." until two labels are left.
        ("www", "https://www.www.Shop-WWW.example.com/", "shop-www.example.com", "activated"),
        # UTS #46 non-transitional (IDNA2008), as the server: "ß" stays "ß", not "ss". The
        # license allows only "straße.de", so a client sending "strasse.de" would be refused.
        ("idn", "Straße.de", "xn--strae-oqa.de", "activated"),
        # IP literals in canonical form: an IPv4-mapped loopback is 127.0.0.1, a dev host.
        ("ipv6", "[0:0:0:0:0:FFFF:7F00:1]:8080", "127.0.0.1", "dev_host"),
    ],
    ids=["www_www", "idn_sharp_s", "ipv4_mapped_ipv6"],
)
def test_domain_normalised_like_the_server(
    server, php, tmp_path, scenario, domain, canonical, reason
):
    license = server.licenses[scenario]
    cache = tmp_path / "cache.json"
    first = php.check(license.key, cache, domain=domain)
    assert outcome(first) == ("active", reason, False)
    assert last_attempt(server, license) == ("active", reason, canonical, canonical)
    assert read_cache(cache)["domain"] == canonical
    assert local_key_claims(cache)["domain"] == canonical  # dev_host answers carry one too

    again = php.check(license.key, cache, domain=domain)
    assert outcome(again) == ("active", reason, True)
    assert attempts(server, license) == 1

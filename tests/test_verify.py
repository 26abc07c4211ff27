"""The verify decision through the native endpoint: every status, every reason, bindings."""

from __future__ import annotations

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import licenses as license_rows
from license_server.licensing.lifecycle import Action
from tests.verify_helpers import attempts, issue, nonce, product, reference_client


@pytest.fixture
async def checker(client, app_runtime):
    await product(app_runtime, seats=2, dev_host_allowance=2)
    return reference_client(client, app_runtime)


async def test_first_check_activates_and_binds(checker, app_runtime):
    license, key = await issue(app_runtime)
    result = await checker.check(key, "Shop.Example.com")
    assert (result.status, result.reason) == ("active", "activated")
    assert result.claims["domain"] == "shop.example.com"
    assert result.license["domains"] == ["shop.example.com"]
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert stored.status.value == "active"
    assert [(b.value, b.raw_value) for b in stored.bindings] == [
        ("shop.example.com", "Shop.Example.com")
    ]
    (row,) = await attempts(app_runtime)
    assert (row["license_id"], row["result"], row["reason"]) == (license.id, "active", "activated")
    assert (row["domain_raw"], row["domain"]) == ("Shop.Example.com", "shop.example.com")
    assert row["key_hash"] is None


@pytest.mark.parametrize(
    "same_site", ["www.shop.example.com", "SHOP.example.com.", "https://shop.example.com:8443/x"]
)
async def test_the_same_site_uses_the_same_seat(checker, app_runtime, same_site):
    _, key = await issue(app_runtime, seats=1)
    assert (await checker.check(key, "shop.example.com")).reason == "activated"
    result = await checker.check(key, same_site)
    assert (result.status, result.reason) == ("active", "ok")


async def test_binding_up_to_the_seat_limit_then_refusal(checker, app_runtime):
    license, key = await issue(app_runtime)  # product default: 2 seats
    assert (await checker.check(key, "one.com")).reason == "activated"
    assert (await checker.check(key, "two.com")).reason == "activated"
    refused = await checker.check(key, "three.com")
    assert (refused.status, refused.reason) == ("invalid", "seat_limit")
    assert refused.license["domains"] == ["one.com", "two.com"]  # tells the customer why
    assert (await checker.check(key, "one.com")).reason == "ok"
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert len(stored.bindings) == 2


async def test_per_license_seats_override_the_product(checker, app_runtime):
    _, key = await issue(app_runtime, seats=1)
    await checker.check(key, "one.com")
    assert (await checker.check(key, "two.com")).reason == "seat_limit"


@pytest.mark.parametrize(
    "dev_host", ["localhost", "127.0.0.1", "10.0.0.5", "192.168.1.20", "shop.test"]
)
async def test_dev_hosts_use_no_seat(checker, app_runtime, dev_host):
    # "staging.shop.com" was in this list: a pattern host is no longer free on its own
    # (issue #11 item 5), see test_pattern_hosts_* below.
    license, key = await issue(app_runtime, seats=1)
    dev = await checker.check(key, dev_host)
    assert (dev.status, dev.reason) == ("active", "dev_host")
    assert (await checker.check(key, "real.com")).reason == "activated"  # the seat is free
    assert (await checker.check(key, dev_host)).reason == "dev_host"
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert {(b.value, b.is_dev) for b in stored.bindings} >= {("real.com", False)}
    (row,) = [r for r in await attempts(app_runtime) if r["domain_raw"] == dev_host][:1]
    assert row["reason"] == "dev_host"


PIRATE_HOSTS = ("staging.pirate-shop.com", "dev.pirate-two.net", "staging.pirate-three.org")


async def test_pattern_hosts_of_strangers_take_the_seat_never_free(checker, app_runtime):
    license, key = await issue(app_runtime, seats=1)  # product: 2 free dev hosts
    first, *others = [await checker.check(key, host) for host in PIRATE_HOSTS]
    assert (first.status, first.reason) == ("active", "activated")
    assert [(r.status, r.reason) for r in others] == [("invalid", "seat_limit")] * 2
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert [(b.value, b.is_dev) for b in stored.bindings] == [(PIRATE_HOSTS[0], False)]


async def test_pattern_hosts_are_refused_once_a_real_site_holds_the_seat(checker, app_runtime):
    license, key = await issue(app_runtime, seats=1)
    assert (await checker.check(key, "realshop.com")).reason == "activated"
    for host in PIRATE_HOSTS:
        result = await checker.check(key, host)
        assert (result.status, result.reason) == ("invalid", "seat_limit"), host
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert [b.value for b in stored.bindings] == ["realshop.com"]


async def test_a_pattern_host_is_free_under_a_bound_domain(checker, app_runtime):
    license, key = await issue(app_runtime, seats=1)
    assert (await checker.check(key, "realshop.com")).reason == "activated"
    for host in ("staging.realshop.com", "dev.realshop.com"):
        result = await checker.check(key, host)
        assert (result.status, result.reason) == ("active", "dev_host"), host
    assert (await checker.check(key, "staging.realshop.com")).reason == "dev_host"  # bound now
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert {(b.value, b.is_dev) for b in stored.bindings} == {
        ("realshop.com", False),
        ("staging.realshop.com", True),
        ("dev.realshop.com", True),
    }
    # The 2 dev slots are used; a third pattern host is a site like any other: no seat left.
    assert (await checker.check(key, "staging.shop.realshop.com")).reason == "seat_limit"


async def test_a_pattern_host_on_a_license_with_nothing_bound_takes_a_seat(checker, app_runtime):
    license, key = await issue(app_runtime, seats=1)
    result = await checker.check(key, "staging.realshop.com")
    assert (result.status, result.reason) == ("active", "activated")
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert [(b.value, b.is_dev) for b in stored.bindings] == [("staging.realshop.com", False)]
    # The seat it took is a base like any other: its own staging host is free.
    assert (await checker.check(key, "staging.staging.realshop.com")).reason == "dev_host"


@pytest.mark.parametrize("rule", ["realshop.com", "*.realshop.com"])
async def test_a_pattern_host_is_free_under_an_allowing_rule(checker, app_runtime, rule):
    license, key = await issue(app_runtime, seats=1, domains=(rule,))
    result = await checker.check(key, "staging.realshop.com")
    assert (result.status, result.reason) == ("active", "dev_host")
    refused = await checker.check(key, "staging.pirate-shop.com")
    assert (refused.status, refused.reason) == ("invalid", "domain_not_allowed")
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert [(b.value, b.is_dev) for b in stored.bindings] == [("staging.realshop.com", True)]


async def post_check(client, key: str, domain: str) -> dict:
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": domain, "nonce": nonce()}
    )
    assert response.status == 200
    return await response.json()


@pytest.mark.parametrize(
    ("host", "note"),
    [
        ("localhost", "localhost is a development host (reserved name)"),
        ("shop.test", "shop.test is a development host (reserved name .test)"),
        ("127.0.0.1", "127.0.0.1 is a development host (loopback address)"),
        ("10.0.0.5", "10.0.0.5 is a development host (private address)"),
        (
            "staging.realshop.com",
            "staging.realshop.com is a development host: a staging.* subdomain of realshop.com,"
            " bound to this license",
        ),
    ],
)
async def test_the_answer_says_why_a_host_was_free(client, checker, app_runtime, host, note):
    _, key = await issue(app_runtime, seats=1)
    assert (await post_check(client, key, "realshop.com"))["reason"] == "activated"
    body = await post_check(client, key, host)
    assert (body["status"], body["reason"], body["note"]) == ("active", "dev_host", note)
    assert (await post_check(client, key, host))["note"] == note  # again once bound
    assert "note" not in await post_check(client, key, "realshop.com")  # a seat needs no note


async def test_the_answer_names_the_allowing_rule(client, checker, app_runtime):
    _, key = await issue(app_runtime, seats=1, domains=("*.realshop.com",))
    body = await post_check(client, key, "dev.realshop.com")
    assert body["note"] == (
        "dev.realshop.com is a development host: a dev.* subdomain allowed by the rule"
        " *.realshop.com"
    )


async def test_a_dev_binding_from_the_old_rules_is_honoured_but_frees_no_more(
    client, checker, app_runtime
):
    # Under the old rules "staging.pirate-shop.com" was bound as a dev host; such rows stay in
    # existing databases. It is the license's own binding (staff see it, reissue frees it),
    # so it keeps answering, and it keeps its dev slot so that no new free host is made.
    license, key = await issue(app_runtime, seats=1)
    await checker.check(key, "realshop.com")
    async with app_runtime.db.write() as conn:
        await license_rows.upsert_binding(
            conn,
            license.id,
            kind="domain",
            value="staging.pirate-shop.com",
            raw_value="staging.pirate-shop.com",
            is_dev=True,
            now=app_runtime.licenses.now(),
        )
    app_runtime.verifier.forget(license.id)
    body = await post_check(client, key, "staging.pirate-shop.com")
    assert (body["status"], body["reason"]) == ("active", "dev_host")
    assert body["note"] == (
        "staging.pirate-shop.com was bound to this license as a development host under"
        " earlier rules"
    )
    assert (await checker.check(key, "dev.staging.pirate-shop.com")).reason == "seat_limit"
    assert (await checker.check(key, "staging.realshop.com")).reason == "dev_host"  # slot 2 of 2
    assert (await checker.check(key, "localhost")).reason == "seat_limit"  # no slot left


async def test_the_dev_host_patterns_come_from_the_settings(aiohttp_client, settings):
    verify = settings.verify.model_copy(update={"dev_host_patterns": ("QA.*",)})
    client = await aiohttp_client(create_app(settings.model_copy(update={"verify": verify})))
    runtime = client.app[RUNTIME]
    await product(runtime, seats=1, dev_host_allowance=2)
    checker = reference_client(client, runtime)
    _, key = await issue(runtime)
    await checker.check(key, "realshop.com")
    assert (await checker.check(key, "qa.realshop.com")).reason == "dev_host"
    assert (await checker.check(key, "staging.realshop.com")).reason == "seat_limit"


async def test_dev_host_allowance_is_capped(checker, app_runtime):
    _, key = await issue(app_runtime, seats=1)
    for host in ("a.test", "b.test"):
        assert (await checker.check(key, host)).reason == "dev_host"
    # The product allows 2 dev hosts; a third one takes the seat like any other domain.
    assert (await checker.check(key, "c.test")).reason == "activated"
    assert (await checker.check(key, "real.com")).reason == "seat_limit"


async def test_past_the_allowance_a_dev_host_obeys_the_allow_rules(checker, app_runtime):
    _, key = await issue(app_runtime, seats=1, domains=("realshop.com",))
    for host in ("a.test", "b.test"):
        assert (await checker.check(key, host)).reason == "dev_host"
    # No dev slot left: c.test is a site like any other, and the rules do not allow it (it
    # used to bypass them and take the seat).
    result = await checker.check(key, "c.test")
    assert (result.status, result.reason) == ("invalid", "domain_not_allowed")
    assert (await checker.check(key, "realshop.com")).reason == "activated"


async def test_unknown_key(checker, app_runtime):
    result = await checker.check("Leased-5c6d2f1a9b", "shop.com")
    assert (result.status, result.reason) == ("invalid", "unknown_key")
    assert result.license is None  # no facts for a key that matches nothing
    (row,) = await attempts(app_runtime)
    assert row["license_id"] is None and len(row["key_hash"]) == 32
    assert "Leased-5c6d2f1a9b" not in repr(row)


async def test_forged_key_is_refused_without_a_database_lookup(checker, app_runtime, monkeypatch):
    _, key = await issue(app_runtime)
    forged = key[:-10] + ("A" if key[-10] != "A" else "B") + key[-9:]

    async def no_lookup(*args, **kwargs):
        raise AssertionError("a forged key reached the database")

    monkeypatch.setattr(app_runtime.licenses, "license_by_lookup", no_lookup)
    result = await checker.check(forged, "shop.com")
    assert (result.status, result.reason) == ("invalid", "bad_signature")


@pytest.mark.parametrize(
    ("action", "status"),
    [(Action.SUSPEND, "suspended"), (Action.REVOKE, "revoked"), (Action.EXPIRE, "expired")],
)
async def test_statuses(checker, app_runtime, action, status):
    license, key = await issue(app_runtime)
    assert (await checker.check(key, "shop.com")).status == "active"
    await app_runtime.licenses.apply(license.id, action)
    result = await checker.check(key, "shop.com")  # the cache was dropped at once
    assert (result.status, result.reason, result.local_key) == (status, status, None)
    assert (await attempts(app_runtime))[-1]["result"] == status


async def test_expiry_date_passes_without_a_job(checker, app_runtime):
    import datetime as dt

    license, key = await issue(app_runtime, expires=dt.date.today() + dt.timedelta(days=3))
    active = await checker.check(key, "shop.com")
    assert active.claims["exp"] <= license.expires_at  # the local key never outlives it
    assert active.claims["grace_until"] <= license.expires_at
    # Move the server past the expiry date (the client's clock too, or it would rightly
    # reject the answer's server_time as stale: both run on this one machine).
    app_runtime.licenses.clock = lambda: license.expires_at + 1
    checker.clock = lambda: license.expires_at + 1
    app_runtime.verifier.forget(license.id)
    result = await checker.check(key, "shop.com")
    assert (result.status, result.reason) == ("expired", "expired")


async def test_product_mismatch(checker, app_runtime):
    _, key = await issue(app_runtime)
    result = await checker.check(key, "shop.com", product="othermod")
    assert (result.status, result.reason) == ("invalid", "product_mismatch")
    assert (await checker.check(key, "shop.com", product="mymod")).status == "active"


async def test_domain_rules_exact_and_wildcard(checker, app_runtime):
    _, key = await issue(app_runtime, domains=("*.shops.net", "exact.com"), seats=5)
    assert (await checker.check(key, "a.shops.net")).status == "active"
    assert (await checker.check(key, "b.c.shops.net")).status == "active"
    assert (await checker.check(key, "www.exact.com")).status == "active"
    for outside in ("shops.net", "evil.com", "exact.com.evil.com"):
        result = await checker.check(key, outside)
        assert (result.status, result.reason) == ("invalid", "domain_not_allowed"), outside


async def test_ip_rules_exact_and_cidr(checker, app_runtime):
    _, key = await issue(app_runtime, ips=("203.0.113.0/24", "198.51.100.7"))
    assert (await checker.check(key, "shop.com", ip="203.0.113.99")).status == "active"
    assert (await checker.check(key, "shop.com", ip="198.51.100.7")).status == "active"
    result = await checker.check(key, "shop.com", ip="198.51.100.8")
    assert (result.status, result.reason) == ("invalid", "ip_not_allowed")
    # No reported IP: the caller's address (127.0.0.1 here) is what is checked.
    assert (await checker.check(key, "shop.com")).reason == "ip_not_allowed"


async def test_directory_rules(checker, app_runtime):
    _, key = await issue(app_runtime, directories=("/var/www/whmcs/modules/addons/mymod",))
    ok = await checker.check(key, "shop.com", directory="/var/www/whmcs/modules/addons/mymod/")
    assert ok.status == "active"
    result = await checker.check(key, "shop.com", directory="/home/pirate/mymod")
    assert (result.status, result.reason) == ("invalid", "directory_not_allowed")


async def test_reissue_frees_bindings_and_the_next_check_binds(checker, app_runtime):
    license, key = await issue(app_runtime, seats=1)
    await checker.check(key, "old.com")
    assert (await checker.check(key, "new.com")).reason == "seat_limit"
    await app_runtime.licenses.apply(license.id, Action.REISSUE)
    result = await checker.check(key, "new.com")
    assert (result.status, result.reason) == ("active", "activated")
    assert (await checker.check(key, "old.com")).reason == "seat_limit"
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert stored.reissue_count == 1 and [b.value for b in stored.bindings] == ["new.com"]


async def test_banned_domain_and_ip_are_suspended(checker, app_runtime):
    _, key = await issue(app_runtime, seats=5)
    await app_runtime.bans.ban("domain", "WWW.Pirate.net")
    result = await checker.check(key, "pirate.net")
    assert (result.status, result.reason) == ("suspended", "banned")
    await app_runtime.bans.ban("ip", "203.0.113.9")
    assert (await checker.check(key, "fine.com", ip="203.0.113.9")).reason == "banned"
    assert await app_runtime.bans.unban("domain", "pirate.net")
    assert (await checker.check(key, "pirate.net")).status == "active"


async def test_a_second_free_trial_on_the_same_domain_is_suspended(client, app_runtime):
    await product(app_runtime, code="trial", free_trial=True)
    checker = reference_client(client, app_runtime)
    _, first = await issue(app_runtime, "trial")
    second_license, second = await issue(app_runtime, "trial")
    assert (await checker.check(first, "shop.com")).status == "active"
    result = await checker.check(second, "www.shop.com")
    assert (result.status, result.reason) == ("suspended", "trial_already_used")
    stored = await app_runtime.licenses.license_by_id(second_license.id)
    assert stored.status.value == "suspended" and stored.bindings == ()
    # A trial on another domain is fine.
    _, third = await issue(app_runtime, "trial")
    assert (await checker.check(third, "other.com")).status == "active"


async def test_simultaneous_first_checks_cannot_exceed_the_seats(checker, app_runtime):
    import asyncio

    license, key = await issue(app_runtime, seats=1)
    results = await asyncio.gather(*(checker.check(key, f"site{i}.com") for i in range(8)))
    assert sorted(r.reason for r in results) == ["activated"] + ["seat_limit"] * 7
    stored = await app_runtime.licenses.license_by_id(license.id)
    assert len(stored.bindings) == 1


async def test_json_bodies_are_accepted_too(client, app_runtime):
    await product(app_runtime)
    _, key = await issue(app_runtime)
    response = await client.post(
        "/api/v1/verify",
        json={"license_key": key, "domain": "shop.com", "nonce": "n" * 20, "extra": [1, 2]},
    )
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["nonce"]) == ("active", "n" * 20)


async def test_a_product_change_reaches_cached_licenses_at_once(checker, app_runtime):
    from license_server.licensing.specs import ProductChanges

    _, key = await issue(app_runtime)  # seats from the product: 2
    await checker.check(key, "one.com")
    await checker.check(key, "two.com")
    assert (await checker.check(key, "three.com")).reason == "seat_limit"
    await app_runtime.licenses.update_product("mymod", ProductChanges(seats=3))
    assert (await checker.check(key, "three.com")).reason == "activated"


# --- issue #11, item 10: the hot path does no work that scales or repeats -----------------


def _facts(domain: str = "shop.com"):
    from license_server.licensing.decision import Facts
    from license_server.licensing.verifier import RawBinding

    return Facts(domain=domain, ip="203.0.113.5", directory="", product=""), RawBinding(
        domain, "203.0.113.5", ""
    )


class _IdReads:
    """A cached value that counts how often its license id is read."""

    reads = 0

    def __init__(self, license_id: int) -> None:
        self._id = license_id

    @property
    def id(self) -> int:
        type(self).reads += 1
        return self._id


async def test_forgetting_a_license_does_not_scan_the_license_cache(app_runtime):
    verifier = app_runtime.verifier
    size = app_runtime.settings.verify.cache_size  # the default: 100,000
    for n in range(size):
        verifier._licenses.put(n.to_bytes(8, "big"), _IdReads(n))
    _IdReads.reads = 0
    verifier.forget(4242)
    assert _IdReads.reads == 0  # the old scan read the id of every cached license
    assert verifier._licenses.get((4242).to_bytes(8, "big")) is None
    assert verifier._licenses.get((4243).to_bytes(8, "big")) is not None
    assert len(verifier._licenses) == size - 1


def test_the_cache_index_follows_replacement_eviction_and_expiry():
    from license_server.licensing.caches import TtlCache

    now = [0.0]
    cache = TtlCache(10, 3, clock=lambda: now[0], tag=lambda value: value[0])
    cache.put("a", ("x", 1))
    cache.put("a", ("y", 1))  # replaced: no longer filed under x
    cache.put("b", ("x", 2))
    cache.discard_tag("x")
    assert (cache.get("a"), cache.get("b")) == (("y", 1), None)
    cache.put("c", ("z", 3))
    cache.put("d", ("z", 4))
    cache.put("e", ("z", 5))  # full: "a" is evicted, and its tag with it
    assert cache._by_tag.keys() == {"z"}
    now[0] = 11
    assert cache.get("c") is None  # expired
    assert cache._by_tag["z"] == {"d", "e"}
    cache.discard_tag("z")
    assert len(cache) == 0 and cache._by_tag == {}


def _forge(key: str) -> str:
    return key[:-10] + ("A" if key[-10] != "A" else "B") + key[-9:]


class _Spy:
    """Counts calls of a real function."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


async def test_a_refused_key_is_verified_and_hashed_once(app_runtime, monkeypatch):
    from license_server.licensing import service as service_module

    await product(app_runtime)
    _, key = await issue(app_runtime)
    forged = _forge(key)
    parses = _Spy(service_module.parse_signed_key)
    monkeypatch.setattr(service_module, "parse_signed_key", parses)
    hasher = app_runtime.licenses.hasher
    hashes = _Spy(hasher.hash)
    monkeypatch.setattr(hasher, "hash", hashes)
    verifier = app_runtime.verifier
    facts, raw = _facts()
    for _ in range(3):  # three requests as the web layer makes them: lookup, then check
        _ = verifier.lookup(forged).rate_limit_id
        outcome = await verifier.check(forged, facts, raw)
        assert (outcome.verdict.reason, outcome.license) == ("bad_signature", None)
    # The old code verified twice and hashed twice on every request.
    assert (parses.calls, hashes.calls) == (1, 2)


async def test_lookup_gives_the_rate_limit_identity_and_the_lookup_at_once(app_runtime):
    await product(app_runtime)
    license, key = await issue(app_runtime)
    verifier = app_runtime.verifier
    genuine = verifier.lookup(key)
    assert genuine.rejected_reason is None and genuine.lookup is not None
    assert verifier.lookup(key.lower()).rate_limit_id == genuine.rate_limit_id
    facts, raw = _facts()
    outcome = await verifier.check(genuine, facts, raw)
    assert (outcome.verdict.reason, outcome.license.id) == ("activated", license.id)
    refused_key = verifier.lookup(_forge(key))
    assert (refused_key.rejected_reason, refused_key.lookup) == ("bad_signature", None)
    assert refused_key.rate_limit_id != genuine.rate_limit_id
    outcome = await verifier.check(refused_key, facts, raw)
    assert outcome.verdict.reason == "bad_signature"
    assert outcome.key_hash == refused_key.key_hash


async def test_a_refusal_is_forgotten_when_the_keyring_changes(app_runtime):
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from license_server.crypto.signing import Keyring, SigningKey
    from license_server.licensing.license_keys import make_license_key

    prefix = (await product(app_runtime)).key_prefix
    new_key = SigningKey.from_private(Ed25519PrivateKey.generate(), int(time.time()) + 1)
    text = make_license_key(Keyring([new_key]), prefix, 12345)
    verifier, service = app_runtime.verifier, app_runtime.licenses
    assert verifier.lookup(text).rejected_reason == "bad_signature"  # unknown key hint
    service.keyring = Keyring([*service.keyring.keys, new_key])  # a reload adds the key
    assert verifier.lookup(text).rejected_reason == "bad_signature"  # remembered
    verifier.forget_refusals()
    assert verifier.lookup(text).rejected_reason is None


async def test_a_first_use_loads_the_license_once(app_runtime, monkeypatch):
    from license_server.db import licenses as license_rows

    await product(app_runtime, seats=2)
    license, key = await issue(app_runtime)
    # Inside the write transaction the row is read by the query that locks it.
    by_id = _Spy(license_rows.lock_license)
    bindings = _Spy(license_rows.bindings_of)
    monkeypatch.setattr(license_rows, "lock_license", by_id)
    monkeypatch.setattr(license_rows, "bindings_of", bindings)
    facts, raw = _facts()
    outcome = await app_runtime.verifier.check(key, facts, raw)
    assert outcome.verdict.reason == "activated"
    # One read to decide (by key hash), one inside the write transaction; none after.
    assert (by_id.calls, bindings.calls) == (1, 2)
    # What was built in memory is what the database now holds.
    assert outcome.license == await app_runtime.licenses.license_by_id(license.id)
    second = await app_runtime.verifier.check(key, *_facts("two.com"))
    assert second.verdict.reason == "activated"  # bound, already active: no status change
    assert second.license == await app_runtime.licenses.license_by_id(license.id)

"""The admin's signing keys page (issue #12): the staged rollout through the pages, the same
refusals as `run.py`, audit rows without key material, which client versions still use an old
key, and hostile forms. The role x route matrix is in tests/test_admin_licenses.py."""

from __future__ import annotations

import json
import re

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI
from license_server.licensing.attempt_log import Attempt
from license_server.licensing.lifecycle import Action
from license_server.licensing.signing_keys import USAGE_WINDOW_SECONDS
from license_server.settings import Settings
from license_server.staff import rbac
from license_server.web.admin import STAFF
from license_server.web.admin.keys import KEY_CONSOLE
from tests.test_admin import field
from tests.test_admin_licenses import issue, staff_session
from tests.verify_helpers import nonce

DAY = 86400


async def jwks_kids(client) -> set[str]:
    response = await client.get("/.well-known/jwks.json")
    return {entry["kid"] for entry in json.loads(await response.read())["keys"]}


def key_state(page: str, kid: str) -> str:
    """The state shown in the keys table's row of `kid`."""
    row = re.search(rf'href="#key-{re.escape(kid)}".*?class="state state-(\w+)"', page, re.S)
    return row.group(1)


async def audit_rows(client) -> list[dict]:
    async with client.app[RUNTIME].db.read() as conn:
        return await staff_rows.audit_page(conn, None, 50)


async def verify_kid(client, key: str) -> str:
    response = await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": "shop.example.com", "nonce": nonce()}
    )
    assert (await response.json())["status"] == "active"
    return re.match(r'keyid="([^"]+)"', response.headers["License-Signature"]).group(1)


async def test_the_staged_rollout_through_the_pages(client):
    runtime = client.app[RUNTIME]
    old_license, old_key = await issue(client)
    old_kid = runtime.keyring.active.kid
    admin = await staff_session(client, "admin")
    response, page = await admin.get("/admin/keys")
    assert response.status == 200 and key_state(page, old_kid) == "active"
    csrf = field(page, "csrf")

    # Add: published (served in the JWKS at once), not signing.
    response, _ = await admin.post("/admin/keys", {"csrf": csrf})
    assert response.status == 303
    new_kid = re.search(r"kid=([A-Za-z0-9_-]{43})", response.headers["Location"]).group(1)
    assert await jwks_kids(client) == {old_kid, new_kid}
    _, page = await admin.get(response.headers["Location"])
    assert "Published a new key" in page and key_state(page, new_kid) == "published"
    x = next(k for k in runtime.keyring.keys if k.kid == new_kid).jwk()["x"]
    assert f"&#39;{new_kid}&#39; =&gt; &#39;{x}&#39;," in page  # the PHP client's entry
    assert "BEGIN PUBLIC KEY" in page and "PRIVATE" not in page
    assert await verify_kid(client, old_key) == old_kid  # the old key still signs

    # Activate: a new license and its answers are signed by the new key.
    response, _ = await admin.post("/admin/keys/activate", {"csrf": csrf, "kid": new_kid})
    assert response.status == 303
    assert runtime.keyring.active.kid == new_kid  # this instance at once
    new_license, new_key = await issue(client)
    async with runtime.db.read() as conn:
        signer = await conn.fetch_value(
            "SELECT signing_kid FROM licenses WHERE id = ?", (new_license,)
        )
    assert signer == new_kid and await verify_kid(client, new_key) == new_kid
    assert await verify_kid(client, old_key) == new_kid  # old keys verify, answers signed anew
    _, page = await admin.get("/admin/keys")
    assert key_state(page, new_kid) == "active" and key_state(page, old_kid) == "published"

    # Retire: refused with the CLI's reasons while anything it signed may be valid.
    response, page = await admin.post("/admin/keys/retire", {"csrf": csrf, "kid": old_kid})
    assert response.status == 409 and "1 license key not revoked" in page
    await runtime.licenses.apply(old_license, Action.REVOKE, actor=CLI)
    response, page = await admin.post("/admin/keys/retire", {"csrf": csrf, "kid": old_kid})
    assert response.status == 409 and "may be valid until" in page
    assert old_kid in await jwks_kids(client)
    real_clock = runtime.licenses.clock
    runtime.licenses.clock = lambda: real_clock() + 30 * DAY  # the offline window has passed
    response, _ = await admin.post("/admin/keys/retire", {"csrf": csrf, "kid": old_kid})
    assert response.status == 303
    assert await jwks_kids(client) == {new_kid}
    _, page = await admin.get("/admin/keys")
    assert key_state(page, old_kid) == "retired"
    response, page = await admin.post("/admin/keys/activate", {"csrf": csrf, "kid": old_kid})
    assert response.status == 409 and "is retired" in page

    # Audited, with who did it; no key material in any row.
    rows = [r for r in await audit_rows(client) if r["action"].startswith("signing_key.")]
    assert [(r["action"], r["target"]) for r in rows] == [
        ("signing_key.retire", f"signing_key:{old_kid}"),
        ("signing_key.activate", f"signing_key:{new_kid}"),
        ("signing_key.add", f"signing_key:{new_kid}"),
    ]
    assert {r["actor_kind"] for r in rows} == {"staff"}
    assert not any("PRIVATE" in r["detail"] or "BEGIN" in r["detail"] for r in rows)
    assert json.loads(rows[1]["detail"]) == {"active_before": old_kid}


async def test_the_active_key_cannot_be_retired_or_activated_again(client):
    kid = client.app[RUNTIME].keyring.active.kid
    admin = await staff_session(client, "admin")
    response, page = await admin.post("/admin/keys/retire", {"csrf": "csrf-admin", "kid": kid})
    assert response.status == 409 and "activate another key first" in page
    response, page = await admin.post("/admin/keys/activate", {"csrf": "csrf-admin", "kid": kid})
    assert response.status == 409 and "already the active key" in page


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"kid": "A" * 43}, 404),  # well-formed, unknown
        ({"kid": "../" * 14 + "a"}, 400),
        ({"kid": "../../keys/signing/keyring.json"}, 400),
        ({"kid": ""}, 400),
        ({}, 400),
        ({"kid": "A" * 44}, 400),
        ({"kid": "A" * 42 + "\u00e9"}, 400),
        ({"kid": "<script>alert(1)</script>"}, 400),
        ({"kid": "x" * 20_000}, 413),
    ],
)
@pytest.mark.parametrize("action", ["activate", "retire"])
async def test_hostile_kids_are_refused_and_change_nothing(client, form, status, action):
    runtime = client.app[RUNTIME]
    admin = await staff_session(client, "admin")
    before = (await jwks_kids(client), runtime.keyring.active.kid, len(await audit_rows(client)))
    response, page = await admin.post(f"/admin/keys/{action}", {"csrf": "csrf-admin", **form})
    assert response.status == status, page
    assert "<script>alert" not in page
    after = (await jwks_kids(client), runtime.keyring.active.kid, len(await audit_rows(client)))
    assert after == before


async def test_repeated_fields_bad_encoding_and_no_token_change_nothing(client):
    runtime = client.app[RUNTIME]
    new = await client.app[KEY_CONSOLE]._keys.add(CLI)  # a published key to aim at
    admin = await staff_session(client, "admin")
    active = runtime.keyring.active.kid
    response, _ = await admin.post(
        "/admin/keys/activate", [("csrf", "csrf-admin"), ("kid", new.kid), ("kid", new.kid)]
    )
    assert response.status == 400
    response, _ = await admin.post(
        "/admin/keys/activate", b"csrf=csrf-admin&kid=\xff\xfe",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status in (400, 404)
    response, _ = await admin.post("/admin/keys/activate", {"kid": new.kid})
    assert response.status == 403  # no CSRF token
    response, _ = await admin.post("/admin/keys/activate", {"csrf": "csrf-admin", "kid": new.kid},
                                   origin="https://evil.example")  # fmt: skip
    assert response.status == 403
    response, _ = await admin.post("/admin/keys", {"csrf": "wrong"})
    assert response.status == 403
    assert runtime.keyring.active.kid == active and len(runtime.keyring.keys) == 2


@pytest.mark.parametrize("role", rbac.ROLES)
async def test_buttons_follow_the_role_and_the_service_checks_again(client, role):
    browser = await staff_session(client, role)
    response, page = await browser.get("/admin/keys")
    if not rbac.has_permission(role, "signing_key:read"):
        assert response.status == 403
    else:
        assert response.status == 200
        assert ("Add a new key" in page) is rbac.has_permission(role, "signing_key:create")
    staff = await client.app[STAFF].session(browser.cookie)
    console = client.app[KEY_CONSOLE]
    kid = client.app[RUNTIME].keyring.active.kid
    for permission, call in (
        ("signing_key:create", lambda: console.add(staff)),
        ("signing_key:activate", lambda: console.activate(staff, kid)),
        ("signing_key:retire", lambda: console.retire(staff, kid)),
        ("signing_key:read", lambda: console.keys(staff)),
    ):
        if not rbac.has_permission(role, permission):
            with pytest.raises(rbac.PermissionDenied):
                await call()


async def test_old_keys_show_which_client_versions_still_check_in(client):
    runtime = client.app[RUNTIME]
    old_kid = runtime.keyring.active.kid
    ids = [(await issue(client))[0] for _ in range(3)]
    keys = client.app[KEY_CONSOLE]._keys
    new = await keys.add(CLI)
    await keys.activate(new.kid, CLI)
    await issue(client)  # signed by the new key: not counted for the old one
    await runtime.licenses.apply(ids[2], Action.REVOKE, actor=CLI)
    now_ms = runtime.licenses.now() * 1000
    stale_ms = now_ms - (USAGE_WINDOW_SECONDS + 3600) * 1000
    rows = [
        (ids[0], "2.1.0", now_ms - 5_000),
        (ids[0], "2.1.0", now_ms - 9_000),
        (ids[1], "1.0.<b>beta</b>", now_ms - 3_600_000),
        (ids[1], "0.9", stale_ms),  # older than the window: not shown
        (None, "9.9", now_ms),  # an unknown key: no license
    ]
    await runtime.db.attempts.write([_attempt(lid, version, at) for lid, version, at in rows], [])
    admin = await staff_session(client, "read_only")
    _, page = await admin.get("/admin/keys")
    section = page.split(f'id="key-{old_kid}"')[1].split("</section>")[0]
    assert "Signed 3 licenses (2 not revoked)" in section
    versions = re.findall(
        r"<tr><td>([^<]*(?:&lt;[^<]*)*)</td><td>(\d+)</td><td>(\d+)</td>", section
    )
    assert versions == [("2.1.0", "1", "2"), ("1.0.&lt;b&gt;beta&lt;/b&gt;", "1", "1")]
    assert "0.9" not in section and "9.9" not in section
    new_section = page.split(f'id="key-{new.kid}"')[1].split("</section>")[0]
    assert "Signs license keys" in new_section and "Client version" not in new_section


def _attempt(license_id, version: str, at_ms: int) -> tuple:
    return Attempt(
        at_ms=at_ms, endpoint="native", source_ip="192.0.2.1", reported_ip="", domain_raw="",
        domain="shop.example.com", directory="", license_id=license_id, key_hash=None,
        product="mymod", result="active", reason="ok", client_version=version, user_agent="",
        latency_us=100,
    ).row()  # fmt: skip


async def test_keys_from_the_environment_are_shown_and_not_changed(aiohttp_client, settings):
    from license_server.app import create_app
    from license_server.crypto.signing import generate_key

    pems = b"".join(generate_key(n)[1] for n in (1, 2))
    env_settings = Settings.model_validate({**settings.model_dump(), "signing_keys": pems.decode()})
    client = await aiohttp_client(create_app(env_settings))
    admin = await staff_session(client, "admin")
    response, page = await admin.get("/admin/keys")
    assert response.status == 200 and "LICENSE_SERVER_SIGNING_KEYS" in page
    assert "Add a new key" not in page and page.count('state state-active">active') == 2
    response, page = await admin.post("/admin/keys", {"csrf": "csrf-admin"})
    assert response.status == 409 and "LICENSE_SERVER_SIGNING_KEYS" in page
    kid = client.app[RUNTIME].keyring.keys[0].kid
    response, page = await admin.post("/admin/keys/activate", {"csrf": "csrf-admin", "kid": kid})
    assert response.status == 409 and "LICENSE_SERVER_SIGNING_KEYS" in page
    assert not [r for r in await audit_rows(client) if r["action"].startswith("signing_key.")]


def test_the_cli_goes_through_the_same_service_and_is_audited(settings, monkeypatch):
    """`run.py rotate-keys` is SigningKeys.add with the CLI actor: the same audit row."""
    import asyncio

    from license_server.cli import main
    from license_server.runtime import open_runtime

    monkeypatch.setenv("LICENSE_SERVER_DATABASE", str(settings.database_location()))
    monkeypatch.setenv("LICENSE_SERVER_KEYS_DIR", str(settings.keys_dir))
    assert main(["rotate-keys"]) == 0

    async def audit() -> list[dict]:
        async with open_runtime(settings) as runtime, runtime.db.read() as conn:
            return await staff_rows.audit_page(conn, None, 10)

    rows = asyncio.run(audit())
    assert [(r["action"], r["actor_kind"]) for r in rows] == [("signing_key.add", "cli")]

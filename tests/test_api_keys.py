"""API keys (issue #13): shown once and stored as a hash, scopes from the rbac catalogue,
expiry, revocation, last-used time written at most once a minute; the per-key rate limit; the
admin's API keys page; `run.py create-api-key`; hostile bodies on the API."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from pydantic import ValidationError

from license_server import cli
from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.db import api_keys as key_rows
from license_server.db import staff as staff_rows
from license_server.licensing.actors import CLI
from license_server.staff.api_keys import NewApiKey
from license_server.web.api import API_KEYS
from tests.api_helpers import LICENSE_BODY, PRODUCT_BODY, api, make_key
from tests.conftest import with_sections
from tests.test_admin import field
from tests.test_admin_licenses import staff_session

PROBLEM = "application/problem+json"


async def test_a_key_is_stored_only_as_a_hash_behind_its_prefix(client):
    secret, headers = await make_key(client, ["license:*", "product:read"])
    assert secret.startswith("lsk_live_") and len(secret) == len("lsk_live_") + 12 + 1 + 43
    prefix = secret[: len("lsk_live_") + 12]
    async with client.app[RUNTIME].db.read() as conn:
        row = await key_rows.api_key_by_prefix(conn, prefix)
    assert bytes(row["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in json.dumps({k: str(v) for k, v in row.items()})
    response, _ = await api(client, "GET", "/api/v1/licenses", headers)
    assert response.status == 200


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer lsk_live_000000000000_" + "A" * 43,
     "Bearer not-a-key", "Bearer " + "x" * 5000],
)  # fmt: skip
async def test_missing_or_unknown_keys_are_401(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response, problem = await api(client, "GET", "/api/v1/products", headers)
    assert response.status == 401 and response.content_type == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="license-server"')
    assert problem["status"] == 401


async def test_a_tampered_secret_of_a_real_prefix_is_401(client):
    secret, _ = await make_key(client)
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    response, _ = await api(
        client, "GET", "/api/v1/products", {"Authorization": f"Bearer {forged}"}
    )
    assert (
        response.status == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    )


async def test_revoked_and_expired_keys_are_401(client):
    _secret, headers = await make_key(client)
    keys = client.app[API_KEYS]
    key = (await keys.all())[0]
    await keys.revoke(CLI, key.id)
    response, problem = await api(client, "GET", "/api/v1/products", headers)
    assert response.status == 401 and problem["detail"] == "The API key was revoked."
    with pytest.raises(ValueError, match="already revoked"):
        await keys.revoke(CLI, key.id)

    _, headers = await make_key(client, expires=dt.date.today() + dt.timedelta(days=2))
    response, _ = await api(client, "GET", "/api/v1/products", headers)
    assert response.status == 200
    async with client.app[RUNTIME].db.write() as conn:  # its last day is over
        await conn.execute("UPDATE api_keys SET expires_at = 1 WHERE revoked_at IS NULL")
    response, problem = await api(client, "GET", "/api/v1/products", headers)
    assert response.status == 401 and problem["detail"] == "The API key has expired."


async def test_bad_scopes_and_names_are_refused(client):
    for scopes in ((), ("license:fly",), ("nothing:*",), ("license",), ("**",)):
        with pytest.raises(ValidationError):
            NewApiKey(name="x", scopes=scopes)
    with pytest.raises(ValidationError):
        NewApiKey(name="  ", scopes=("*",))
    with pytest.raises(ValueError, match="past"):
        await client.app[API_KEYS].create(
            CLI, NewApiKey(name="x", scopes=("*",), expires=dt.date(2001, 1, 1))
        )


async def test_last_use_is_written_at_most_once_a_minute(client):
    _, headers = await make_key(client)
    keys = client.app[API_KEYS]
    runtime = client.app[RUNTIME]
    writes = []
    original = key_rows.touch_api_key

    async def counting(*args, **kwargs):
        writes.append(args)
        await original(*args, **kwargs)

    key_rows.touch_api_key = counting
    try:
        for _ in range(5):
            await api(client, "GET", "/api/v1/products", headers)
        assert len(writes) == 1
        first = (await keys.all())[0].last_used_at
        assert first is not None
        clock = runtime.licenses.clock
        runtime.licenses.clock = lambda: clock() + 61
        try:
            await api(client, "GET", "/api/v1/products", headers)
        finally:
            runtime.licenses.clock = clock
        assert len(writes) == 2 and (await keys.all())[0].last_used_at >= first + 61
    finally:
        key_rows.touch_api_key = original


async def test_the_rate_limit_is_per_key_with_the_ratelimit_fields(aiohttp_client, settings):
    limited = with_sections(settings, rate_limit={"per_api_key": "3/minute"})
    client = await aiohttp_client(create_app(limited))
    _, headers = await make_key(client)
    _, other = await make_key(client, name="other")
    for _ in range(3):
        response, _ = await api(client, "GET", "/api/v1/products", headers)
        assert response.status == 200
    response, problem = await api(client, "GET", "/api/v1/products", headers)
    assert response.status == 429 and response.content_type == PROBLEM
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Policy"] == '"per-api-key";q=3;w=60'
    assert response.headers["RateLimit"].startswith('"per-api-key";r=0;t=')
    assert problem["status"] == 429
    response, _ = await api(client, "GET", "/api/v1/products", other)  # its own budget
    assert response.status == 200


async def test_guessing_keys_runs_out_of_the_addresss_budget(aiohttp_client, settings):
    limited = with_sections(settings, rate_limit={"unknown_key_per_ip": "3/minute"})
    client = await aiohttp_client(create_app(limited))
    bad = {"Authorization": "Bearer lsk_live_000000000000_" + "A" * 43}
    statuses = [(await api(client, "GET", "/api/v1/products", bad))[0].status for _ in range(5)]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]


# -- hostile bodies -------------------------------------------------------------------------

HOSTILE = [
    (b"{", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'"text"', "application/json", 400),
    (b'{"code": "a", "code": "b", "name": "n"}', "application/json", 400),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    (b'{"code": "a", "name": "\xff"}', "application/json", 400),
    (b'{"code": "a", "name": "n", "seats": 1' + b"0" * 5000 + b"}", "application/json", 400),
    (b'{"code": "a", "name": "n", "seats": 1.5}', "application/json", 400),
    (b'{"code": "a", "name": "n", "seats": true}', "application/json", 400),
    (b'{"code": ["a"], "name": {"x": 1}}', "application/json", 400),
    (b'{"code": "a", "name": "n", "features": "x"}', "application/json", 400),
    (b'{"code": "a", "name": "n\\u0000"}', "application/json", 400),
    (b"code=a&name=n", "application/x-www-form-urlencoded", 415),
    (b'{"code": "a", "name": "n"}', "text/plain", 415),
    (b'{"code": "a", "name": "' + b"n" * 40_000 + b'"}', "application/json", 413),
    (b"", "application/json", 400),
]


@pytest.mark.parametrize(("body", "content_type", "status"), HOSTILE)
async def test_hostile_bodies_are_4xx_problems_and_write_nothing(client, body, content_type,
                                                                 status):  # fmt: skip
    _, headers = await make_key(client)
    response = await client.post(
        "/api/v1/products", data=body, headers={**headers, "Content-Type": content_type}
    )
    problem = await response.json(content_type=None)
    assert response.status == status, problem
    assert response.content_type == PROBLEM and problem["status"] == status
    assert await client.app[RUNTIME].licenses.products() == []


async def test_an_action_takes_no_body_but_an_empty_object(client):
    _, headers = await make_key(client)
    await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY)
    _, created = await api(client, "POST", "/api/v1/licenses", headers, LICENSE_BODY)
    path = f"/api/v1/licenses/{created['id']}/suspend"
    response, problem = await api(client, "POST", path, headers, {"force": True})
    assert response.status == 400 and problem["errors"][0]["field"] == "force"
    response, _ = await api(client, "POST", path, headers, {})
    assert response.status == 200


# -- the admin page -------------------------------------------------------------------------


async def test_an_administrator_makes_and_revokes_a_key_in_the_admin(client):
    browser = await staff_session(client, "admin")
    response, page = await browser.get("/admin/api-keys")
    assert response.status == 200 and "No API key yet" in page
    csrf = field(page, "csrf")
    response, page = await browser.post("/admin/api-keys", {
        "csrf": csrf, "name": "WHMCS <billing>", "expires": "",
        "scope.license:*": "on", "scope.product:read": "on",
    })  # fmt: skip
    assert response.status == 200 and "shown this once" in page
    assert "WHMCS &lt;billing&gt;" in page and "<billing>" not in page
    secret = page.split('<span class="secret">')[1].split("<")[0]
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api(client, "GET", "/api/v1/licenses", headers))[0].status == 200
    assert (await api(client, "POST", "/api/v1/products", headers, PRODUCT_BODY))[0].status == 403

    _, page = await browser.get("/admin/api-keys")
    assert secret not in page and secret[:21] in page  # the prefix, never the secret again
    key_id = field(page, "id")
    response, _ = await browser.post("/admin/api-keys/revoke", {"csrf": csrf, "id": key_id})
    assert response.status == 303
    assert (await api(client, "GET", "/api/v1/licenses", headers))[0].status == 401
    response, page = await browser.post("/admin/api-keys/revoke", {"csrf": csrf, "id": key_id})
    assert response.status == 409 and "already revoked" in page

    async with client.app[RUNTIME].db.read() as conn:
        actions = [row["action"] for row in await staff_rows.audit_page(conn, None, 10)]
    assert actions[:2] == ["api_key.revoke", "api_key.create"]


@pytest.mark.parametrize(
    "form",
    [
        {"name": "", "scope.*": "on"},
        {"name": "x"},
        {"name": "x", "scope.license:fly": "on"},
        {"name": "x", "scope.*": "on", "expires": "tomorrow"},
        {"name": "x", "scope.*": "on", "expires": "2001-01-01"},
        {"name": "x\x00", "scope.*": "on"},
    ],
)
async def test_bad_key_forms_are_400_and_make_nothing(client, form):
    browser = await staff_session(client, "admin")
    response, page = await browser.post("/admin/api-keys", {"csrf": "csrf-admin", **form})
    assert response.status == 400, page
    assert await client.app[API_KEYS].all() == []
    for bad_id in ("", "abc", "0", "99999999999999999999", "12345"):
        response, _ = await browser.post("/admin/api-keys/revoke",
                                         {"csrf": "csrf-admin", "id": bad_id})  # fmt: skip
        assert response.status == 400


# -- the command line -----------------------------------------------------------------------


def test_create_api_key_from_the_command_line(settings, tmp_path, capsys, monkeypatch):
    config = tmp_path / "settings.toml"
    # The real location (on postgresql a URL that str() of the setting would mask).
    database = settings.database_location()
    config.write_text(f'database = "{database}"\nkeys_dir = "{settings.keys_dir}"\n')
    argv = ["--config", str(config), "create-api-key", "--name", "WHMCS billing",
            "--scopes", "license:*,product:read"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("API key lsk_live_") and "license:*, product:read" in out[0]
    assert out[-1].startswith("lsk_live_") and len(out[-1]) == 65
    bad = ["--config", str(config), "create-api-key", "--name", "x", "--scopes", "license:fly"]
    assert cli.main(bad) == 2
    assert "scopes" in capsys.readouterr().err

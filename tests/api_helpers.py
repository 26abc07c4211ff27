"""Helpers of the vendor API tests: an API key with given scopes, its headers, a product."""

from __future__ import annotations

import datetime as dt

from license_server.licensing.actors import CLI
from license_server.staff.api_keys import NewApiKey
from license_server.web.api import API_KEYS


async def make_key(
    client, scopes=("*",), *, name: str = "billing", expires: dt.date | None = None
) -> tuple[str, dict[str, str]]:
    """A new API key (its full text) and the headers that present it."""
    _key, secret = await client.app[API_KEYS].create(
        CLI, NewApiKey(name=name, scopes=tuple(scopes), expires=expires)
    )
    return secret, {"Authorization": f"Bearer {secret}"}


async def api(client, method: str, path: str, headers: dict[str, str], json=None, **kwargs):
    """(response, parsed JSON body or None)."""
    response = await client.request(method, path, headers=headers, json=json, **kwargs)
    text = await response.text()
    import json as json_module

    try:
        body = json_module.loads(text) if text else None
    except ValueError:
        body = None
    return response, body


PRODUCT_BODY = {"code": "mymod", "name": "My Module", "seats": 2}
LICENSE_BODY = {"product": "mymod", "licensee": "Smith & Sons", "email": "ops@smith.example"}

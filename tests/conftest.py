"""Shared fixtures: test settings on a temporary database and key directory, the app, a product."""

from __future__ import annotations

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.specs import ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings


@pytest.fixture
def database_url(tmp_path):
    """The test's own empty database (SQLite here; the harness adds --store postgresql)."""
    return tmp_path / "data" / "test.db"


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(database=database_url, keys_dir=tmp_path / "keys")


def with_sections(settings: Settings, **sections) -> Settings:
    """`settings` (the test's database and keys) with some settings changed, validated."""
    return Settings.model_validate({**settings.model_dump(), **sections})


@pytest.fixture
async def runtime(settings):
    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def app_runtime(client):
    """The runtime of the app under test (same database and keys as `client`)."""
    return client.app[RUNTIME]


PRODUCT = ProductSpec(code="mymod", name="My Module", seats=2, whmcs_secret="s3cret")

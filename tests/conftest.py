"""Shared fixtures: test settings on a temporary database and key directory, the app, a product."""

from __future__ import annotations

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.specs import ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.services import redis_executable, start_redis, stop_process


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database=tmp_path / "data" / "test.db", keys_dir=tmp_path / "keys")


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


@pytest.fixture
def redis_port(tmp_path):
    """The port of a redis-server on 127.0.0.1 for this test, stopped after it."""
    process, port = start_redis(redis_executable(), tmp_path)
    try:
        yield port
    finally:
        stop_process(process)


PRODUCT = ProductSpec(code="mymod", name="My Module", seats=2, whmcs_secret="s3cret")

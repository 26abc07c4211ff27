"""Shared fixtures: test settings on a temporary database and key directory, the app, a product.

`--store sqlite|postgresql` chooses the database the suite runs on (`store`, `database_url`);
`postgres_cluster` and `redis_port` start throw-away servers (tests/services.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.specs import ProductSpec
from license_server.runtime import open_runtime
from license_server.settings import Settings
from tests.services import (
    POSTGRES_ENV,
    PostgresCluster,
    redis_executable,
    start_redis,
    stop_process,
)

# The browser-test fixtures (browser, page, screenshot) and their test ordering, for every module.
pytest_plugins = ["tests.browser"]

STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=STORES,
        default="sqlite",
        help="the database the tests run on: sqlite (default) or postgresql (a throw-away "
        f"cluster, or the server ${POSTGRES_ENV} names)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    store = config.getoption("store")
    if store == "postgresql":
        where = f"${POSTGRES_ENV}" if os.environ.get(POSTGRES_ENV) else "a throw-away cluster"
        return f"store: postgresql ({where})"
    return f"store: {store}"


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (.ci/run's trap) ends the run as Ctrl-C does: session fixtures are torn down, so
    # no PostgreSQL or Redis outlives the run.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def store(request: pytest.FixtureRequest) -> str:
    """The database backend this run tests: "sqlite" or "postgresql" (`--store`)."""
    return request.config.getoption("store")


@pytest.fixture(scope="session")
def postgres_cluster():
    """One PostgreSQL server for the session, started when a test first needs it."""
    cluster = PostgresCluster.from_environment()
    cluster.start()
    try:
        yield cluster
    finally:
        _drop_finished(cluster)
        cluster.stop()


# Databases of finished tests. A test's fixtures are torn down in the reverse order of their
# set-up, so a server fixture requested before `database_url` (aiohttp_client, settings) would
# still be connected when the database is dropped; dropping at the next test's set-up instead
# leaves every server of the finished test closed first.
_finished: list[str] = []


def _drop_finished(cluster: PostgresCluster) -> None:
    while _finished:
        cluster.drop_database(_finished.pop())


@pytest.fixture
def database_url(tmp_path, request, store) -> Iterator[Path | str]:
    """The test's own empty database: a file path (sqlite) or a fresh database's DSN.

    On postgresql the database is dropped once the test is over (at the next one's set-up).
    """
    if store == "sqlite":
        yield tmp_path / "data" / "test.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    _drop_finished(cluster)
    dsn = cluster.create_database()
    try:
        yield dsn
    finally:
        _finished.append(cluster.database_of(dsn))


@pytest.fixture(scope="session")
def make_database(request, store, tmp_path_factory):
    """Makes a fresh database on the store under test, for fixtures wider than one test
    (a module's server process); on postgresql they live until the session's cluster stops."""

    def make() -> Path | str:
        if store == "sqlite":
            return tmp_path_factory.mktemp("db") / "db.sqlite"
        return request.getfixturevalue("postgres_cluster").create_database()

    return make


# Every 429 is held before it is sent (web/tarpit.py; 1 s in production). The tests keep the
# hold, so that every refusal still goes through it, but short: at 1 s the tests that run into
# limits spent ~100 s of CI asleep. tests/test_tarpit.py checks the hold itself and the default.
TEST_REFUSAL_HOLD_SECONDS = 0.02


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(
        database=database_url,
        keys_dir=tmp_path / "keys",
        rate_limit={"refusal_hold_seconds": TEST_REFUSAL_HOLD_SECONDS},
    )


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


@pytest.fixture
def redis_port(tmp_path):
    """The port of a redis-server on 127.0.0.1 for this test, stopped after it."""
    process, port = start_redis(redis_executable(), tmp_path)
    try:
        yield port
    finally:
        stop_process(process)


@pytest.fixture
async def receiver():
    """A real webhook receiver on 127.0.0.1 (tests/webhook_receiver.py), stopped after the test."""
    from tests.webhook_receiver import Receiver

    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


PRODUCT = ProductSpec(code="mymod", name="My Module", seats=2, whmcs_secret="s3cret")

"""The test harness's throw-away servers (tests/services.py): PostgreSQL databases, Redis."""

from __future__ import annotations

import asyncpg
import pytest

from tests.services import PostgresCluster, redis_command


async def test_the_cluster_accepts_connections(postgres_cluster: PostgresCluster):
    conn = await asyncpg.connect(postgres_cluster.dsn("postgres"))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_setting('server_encoding')") == "UTF8"
    finally:
        await conn.close()


async def test_each_created_database_is_empty_and_isolated(postgres_cluster: PostgresCluster):
    first, second = postgres_cluster.create_database(), postgres_cluster.create_database()
    try:
        assert first != second
        one = await asyncpg.connect(first)
        two = await asyncpg.connect(second)
        try:
            tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            assert await one.fetchval(tables) == 0 and await two.fetchval(tables) == 0
            await one.execute("CREATE TABLE only_here (id integer)")
            assert await one.fetchval("SELECT to_regclass('only_here') IS NOT NULL")
            assert not await two.fetchval("SELECT to_regclass('only_here') IS NOT NULL")
        finally:
            await one.close()
            await two.close()
    finally:
        for dsn in (first, second):
            postgres_cluster.drop_database(postgres_cluster.database_of(dsn))


async def test_a_dropped_database_is_gone(postgres_cluster: PostgresCluster):
    dsn = postgres_cluster.create_database()
    name = postgres_cluster.database_of(dsn)
    assert name in postgres_cluster.databases()
    still_open = await asyncpg.connect(dsn)  # WITH (FORCE): an open connection does not block
    try:
        postgres_cluster.drop_database(name)
    finally:
        await still_open.close()
    assert name not in postgres_cluster.databases()
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(dsn)


def test_drop_database_refuses_names_it_would_have_to_quote(postgres_cluster: PostgresCluster):
    with pytest.raises(ValueError, match="not a database name"):
        postgres_cluster.drop_database('x"; DROP DATABASE postgres; --')


def test_database_url_follows_the_store(database_url, store, tmp_path):
    if store == "sqlite":
        assert database_url == tmp_path / "data" / "test.db"
    else:
        assert isinstance(database_url, str) and database_url.startswith("postgresql://")


def test_redis_answers_ping(redis_port: int):
    assert redis_command(redis_port, b"PING") == b"+PONG\r\n"

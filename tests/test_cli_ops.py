"""run.py migrate, copy-store and backup, run as an operator would, on the store under test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from license_server.db.copy_store import TABLES, checksums, open_store
from license_server.db.migrations import LATEST
from license_server.db.postgres import find_pg_tool

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-secret"


@pytest.fixture
def run(tmp_path, database_url):
    """run.py on the store under test (LICENSE_SERVER_DATABASE), keys in tmp_path."""
    base_env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }

    def run(*args: str, check: bool = True, database: str | Path | None = None):
        env = dict(base_env)
        if database is not None:
            env["LICENSE_SERVER_DATABASE"] = str(database)
        result = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def _fill(run, database=None) -> str:
    product = ("--code", "mymod", "--name", "My Module", "--whmcs-secret", "s3", "--free-trial")
    run("create-product", *product, database=database)
    license = ("--product", "mymod", "--licensee", "Ünïcode & Co", "--email", "a@example.org")
    issued = run("issue", *license, "--domain", "shop.example", database=database)
    run("ban", "ip", "198.51.100.0/24", "--reason", "resold", database=database)
    return issued.stdout.splitlines()[-1]


def _sums(location) -> dict:
    async def read():
        db = await open_store(location)
        try:
            return {name: (s.rows, s.hexdigest) for name, s in (await checksums(db)).items()}
        finally:
            await db.close()

    return asyncio.run(read())


def _one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return result.stderr


def test_migrate_prints_the_versions(run, store):
    first = run("migrate").stdout
    assert f"schema version 0 -> {LATEST}" in first
    assert ("SQLite" if store == "sqlite" else "PostgreSQL") in first
    again = run("migrate").stdout
    assert f"schema version {LATEST} (nothing to do)" in again


def test_migrate_unreachable_database_is_one_line_without_password(run):
    url = f"postgresql://licsrv:{PASSWORD}@127.0.0.1:1/licenses"
    error = _one_line_error(run("migrate", check=False, database=url))
    assert "run.py migrate:" in error


def test_copy_store_into_the_store_under_test_and_back(run, tmp_path, database_url):
    source = tmp_path / "source.db"
    key = _fill(run, database=source)
    copied = run("copy-store", str(source), str(database_url))
    assert "verified: every table has the same rows on both sides" in copied.stdout
    assert copied.stdout.count(" ok\n") == len(TABLES)  # one line per table
    assert _sums(source) == _sums(database_url)
    assert "Ünïcode & Co" in run("show", key).stdout  # the server reads the copy
    run("issue", "--product", "mymod", "--licensee", "New", "--email", "n@example.org")
    back = tmp_path / "back.db"
    run("copy-store", str(database_url), str(back))
    assert "Ünïcode & Co" in run("show", key, database=back).stdout


def test_copy_store_refuses_a_target_with_rows(run, tmp_path, database_url):
    source = tmp_path / "source.db"
    _fill(run, database=source)
    run("ban", "domain", "already.example")  # the target holds one row (and its change)
    before = _sums(database_url)
    error = _one_line_error(run("copy-store", str(source), str(database_url), check=False))
    assert "already holds rows (in bans, license_changes, audit_log)" in error
    assert _sums(database_url) == before


@pytest.mark.parametrize(
    "source, target, says",
    [
        ("{tmp}/missing.db", "{tmp}/to.db", "missing.db does not exist"),
        (f"mysql://root:{PASSWORD}@db/licenses", "{tmp}/to.db", "a mysql:// URL is not a store"),
        ("{tmp}/from.db", f"redis://:{PASSWORD}@cache:6379/0", "a redis:// URL is not a store"),
        (f"postgresql://licsrv:{PASSWORD}@127.0.0.1:1/x", "{tmp}/to.db", "cannot open PostgreSQL"),
        (f"postgresql://licsrv:{PASSWORD}@h:port/x", "{tmp}/to.db", "cannot open PostgreSQL"),
        ("{tmp}/text.db", "{tmp}/to.db", "text.db is not a SQLite database"),
        ("{tmp}/from.db", "{tmp}/from.db", "FROM and TO are the same database"),
    ],
)
def test_copy_store_hostile_locations(run, tmp_path, source, target, says):
    (tmp_path / "text.db").write_text("not a database\n")
    _fill(run, database=tmp_path / "from.db")
    result = run(
        "copy-store",
        source.format(tmp=tmp_path),
        target.format(tmp=tmp_path),
        check=False,
    )
    assert says in _one_line_error(result)
    assert not (tmp_path / "to.db").exists()
    assert not any(PASSWORD in path.name for path in tmp_path.rglob("*"))


def test_backup_restores_to_equal_checksums(run, tmp_path, store, database_url, request):
    key = _fill(run)
    target = tmp_path / "backups" / "licenses.backup"
    assert f"backup written to {target}" in run("backup", str(target)).stdout
    assert target.stat().st_mode & 0o077 == 0
    if store == "sqlite":
        restored: str | Path = target
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        restored = cluster.create_database()
        request.addfinalizer(lambda: cluster.drop_database(cluster.database_of(restored)))
        pg_restore = find_pg_tool("pg_restore")
        assert pg_restore is not None, "pg_restore is not installed"
        subprocess.run(
            [pg_restore, "--no-owner", f"--dbname={restored}", str(target)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert _sums(restored) == _sums(database_url)
    assert "Ünïcode & Co" in run("show", key, database=restored).stdout
    # The restored store takes new rows (PostgreSQL: pg_dump carries the sequences).
    run("create-product", "--code", "later", "--name", "Later", database=restored)


def test_pg_tools_are_found_off_path(monkeypatch):
    """Debian keeps pg_dump in /usr/lib/postgresql/<version>/bin, not always on PATH."""
    monkeypatch.setattr("shutil.which", lambda name: None)
    found = find_pg_tool("pg_dump")
    assert found is not None and found.startswith("/usr/lib/postgresql/"), found
    assert find_pg_tool("no-such-pg-tool") is None

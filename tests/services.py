"""Throw-away servers for tests: PostgreSQL and Redis, on 127.0.0.1, run as an ordinary user.

Tests that need a database server or a Redis start them here instead of each writing their own
Popen, readiness poll and shutdown. Everything listens on loopback only, on a free port, with
its files in a temporary directory that is removed when the server is stopped; every wait is
bounded, so a server that does not come up fails the test (with its log) instead of hanging it.

`PostgresCluster` runs Debian's PostgreSQL binaries (`initdb`, `postgres`) as a private
cluster tuned for tests (no fsync), and hands out a fresh empty database per test
(`create_database`). With `LICENSE_SERVER_TEST_POSTGRES` set to the DSN of an existing server
and a superuser, that server is used instead and nothing is started. PostgreSQL refuses to run
as root: under root, initdb and postgres run as the `postgres` system user (which Debian's
postgresql package creates).

The Redis helpers (`start_redis`, `redis_command`, ...) drive `redis-server` the same way; the
`redis_port` fixture in conftest.py wraps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

POSTGRES_ENV = "LICENSE_SERVER_TEST_POSTGRES"
START_TIMEOUT = 30.0  # seconds for initdb, and again for postgres to accept connections
STOP_TIMEOUT = 30.0  # seconds for a fast shutdown before an immediate one
QUERY_TIMEOUT = 60.0  # seconds for one administrative statement (CREATE / DROP DATABASE)
LOG_TAIL = 4000  # characters of a server's log shown in a failure message
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# The settings of a test instance: durability off (a crash loses only a test's data), enough
# connections for the tests that open several pools at once, and loopback only.
TEST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
}


class ServiceError(RuntimeError):
    """A throw-away server could not be started or asked something."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """Terminates `process` (SIGTERM, then SIGKILL after 10 s) and reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return "(no log)"


# -- PostgreSQL -----------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory of `initdb` and `postgres`: Debian's newest version, else `pg_config`'s."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    versions = sorted(
        (Path(path).parent for path in found if Path(path).parent.parent.name.isdigit()),
        key=lambda bindir: int(bindir.parent.name),
    )
    if versions:
        return versions[-1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        if (Path(bindir) / "initdb").exists():
            return Path(bindir)
    raise ServiceError("PostgreSQL is not installed (CI installs it; so must you)")


def _die_with_parent() -> None:
    """In the child, before exec: SIGINT (PostgreSQL's fast shutdown) when pytest dies.

    So a pytest killed with SIGKILL leaves no postmaster behind. Runs after Popen's setuid: a
    change of credentials would reset it.
    """
    PR_SET_PDEATHSIG = 1
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGINT)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child


class PostgresCluster:
    """A PostgreSQL server for tests: a private cluster, or the one `LICENSE_SERVER_TEST_POSTGRES`
    names.

    `start()` runs initdb into a fresh temporary directory and starts postgres on a free port of
    127.0.0.1 (its unix socket in that directory), trusting every local connection of the
    superuser `postgres`. `create_database()` returns the DSN of a new empty database;
    `drop_database()` removes one; `stop()` shuts the server down and removes its directory. An
    administrative connection is kept open on a private event loop (in its own thread), so the
    methods are plain functions usable from any fixture, sync or async, whatever loop a test runs.
    """

    def __init__(self, external_dsn: str | None = None) -> None:
        self.external_dsn = external_dsn
        self.directory: Path | None = None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._admin: asyncpg.Connection | None = None
        # template0 copied file by file: two checkpoints, cheap without fsync. Measured here (PG15,
        # 10 in a row): 17-48 ms a CREATE and 9 ms a DROP, against 100-170 ms and 16 ms with
        # PG15's default strategy, WAL_LOG, which writes every page to the WAL. An external
        # server keeps its default: its checkpoints fsync.
        self.strategy = "" if external_dsn else " STRATEGY FILE_COPY"

    @classmethod
    def from_environment(cls) -> PostgresCluster:
        """The server `LICENSE_SERVER_TEST_POSTGRES` names if it is set, else a private cluster."""
        return cls(os.environ.get(POSTGRES_ENV) or None)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses --

    def dsn(self, dbname: str) -> str:
        """The DSN of database `dbname` on this server, as the superuser."""
        if self.external_dsn is not None:
            parts = urlsplit(self.external_dsn)
            return urlunsplit(parts._replace(path="/" + dbname))
        if self.port is None:
            raise ServiceError("the cluster is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @staticmethod
    def database_of(dsn: str) -> str:
        """The database name in `dsn`."""
        return urlsplit(dsn).path.lstrip("/")

    # -- databases --

    def create_database(self) -> str:
        """A new empty database with a unique name (a copy of template0); its DSN."""
        name = f"test_{os.getpid()}_{secrets.token_hex(6)}"
        self._call(
            self._admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0{self.strategy}')
        )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drops database `name`, ending the connections still open to it."""
        if not DATABASE_NAME.match(name):
            raise ValueError(f"not a database name this harness creates: {name!r}")
        self._call(self._admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def databases(self) -> set[str]:
        """The names of the databases on the server (templates excluded)."""
        rows = self._call(
            self._admin_fetch("SELECT datname FROM pg_database WHERE NOT datistemplate")
        )
        return {row["datname"] for row in rows}

    # -- life cycle --

    def start(self) -> None:
        """Starts the server (unless external) and opens the administrative connection."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="postgres-admin", daemon=True
        )
        self._thread.start()
        try:
            if self.external_dsn is not None:
                self._admin = self._call(asyncpg.connect(self.external_dsn, timeout=10))
            else:
                self._start_private()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Closes the connection; a private cluster is shut down and its directory removed."""
        try:
            if self._admin is not None and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._call(self._admin.close(timeout=5))
                self._admin = None
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=10)
                self._loop.close()
                self._loop = self._thread = None
            if self.process is not None:
                self._shutdown(self.process)
                self.process = None
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def log(self) -> str:
        """The end of the private server's log."""
        return _tail(self._log) if self._log is not None else ""

    # -- internals --

    def _start_private(self) -> None:
        bindir = postgres_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="license-server-pg-"))
        self._log = self.directory / "postgres.log"
        as_user: dict[str, Any] = {"cwd": self.directory}
        if os.geteuid() == 0:  # postgres refuses root: the package's system user runs it
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "running as root, but there is no `postgres` user to run PostgreSQL as "
                    "(Debian's postgresql package creates it)"
                ) from None
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            as_user.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.directory / "data"), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=START_TIMEOUT, check=False, **as_user,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise ServiceError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            settings = {
                **TEST_SETTINGS,
                "port": str(self.port),
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(self.directory),
            }
            command = [str(bindir / "postgres"), "-D", str(self.directory / "data")]
            for name, value in settings.items():
                command += ["-c", f"{name}={value}"]
            with open(self._log, "ab") as log:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # one ctypes call, looked up before the fork
                    **as_user,
                )
            admin = self._call(self._connect_when_ready(self.process))
            if admin is not None:
                self._admin = admin
                return
            self._shutdown(self.process)
            self.process = None
        raise ServiceError(f"postgres did not start accepting connections:\n{self.log()}")

    async def _connect_when_ready(self, process: subprocess.Popen) -> asyncpg.Connection | None:
        """The admin connection once postgres accepts it; None if postgres exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None:
            try:
                return await asyncpg.connect(self.dsn("postgres"), timeout=5)
            except (OSError, asyncpg.CannotConnectNowError):  # TimeoutError is an OSError
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"postgres did not accept connections within {START_TIMEOUT:.0f} s:\n"
                        f"{self.log()}"
                    ) from None
                await asyncio.sleep(0.05)  # bounded wait for the server to start
        return None

    @staticmethod
    def _shutdown(process: subprocess.Popen) -> None:
        """Fast shutdown (SIGINT); immediate (SIGQUIT), then SIGKILL, if it takes too long."""
        for signum, timeout in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10.0)):
            if process.poll() is not None:
                return
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()

    async def _admin_execute(self, sql: str) -> None:
        if self._admin is None:
            raise ServiceError("the cluster is not started")
        await self._admin.execute(sql)

    async def _admin_fetch(self, sql: str) -> list[asyncpg.Record]:
        if self._admin is None:
            raise ServiceError("the cluster is not started")
        return await self._admin.fetch(sql)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the private loop and returns its result (bounded)."""
        if self._loop is None:
            coro.close()
            raise ServiceError("the cluster is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=QUERY_TIMEOUT)


# -- Redis ----------------------------------------------------------------------------------


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@functools.cache
def php_modules() -> frozenset[str]:
    """The extensions `php -m` lists, in lower case; empty without php-cli (the PHP tests
    skip on what they need)."""
    php = shutil.which("php")
    if php is None:
        return frozenset()
    listed = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    return frozenset(line.strip().lower() for line in listed.splitlines())


def redis_executable() -> str:
    """The path of redis-server; fails the test when it is not installed."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed (CI installs it; so must you)")
    return executable


def start_redis(executable: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    """redis-server on a free local port, answering PING; a few ports are tried (port race)."""
    for _ in range(3):
        port = free_port()
        process = start_redis_on(executable, workdir, port)
        if process is not None:
            return process, port
    pytest.fail("redis-server did not start answering PING on 127.0.0.1")


def start_redis_on(executable: str, workdir: Path, port: int) -> subprocess.Popen | None:
    """redis-server on `port`, once it answers PING; None if it did not start."""
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        if redis_answers(port):
            return process
        time.sleep(0.05)  # bounded wait for the subprocess to start
    stop_process(process)
    return None


def redis_command(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(1024)

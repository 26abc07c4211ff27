"""The real server (`run.py serve`) as a child process, for tests that talk to it over TCP.

Tests that need the server as an operator runs it (a real process on a free port, its own
database and key directory) start it through `ServerProcess` instead of each writing their own
Popen, readiness poll and shutdown. `query` reads the server's database read-only, so a test can
check what the server committed while it keeps running.

The server is configured through the environment only (`LICENSE_SERVER_*`), and it runs in its
own working directory, so the repository's `settings.toml` is never read. Rate limiting is off by
default: these tests send many requests from one address. All waits are bounded, so a broken
server fails the test (with its log) instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import pytest

from tests.services import free_port
from tests.store_helpers import query as store_query

ROOT = Path(__file__).resolve().parent.parent
READY_PAUSE = 0.05  # seconds between two /readyz polls
LOG_TAIL = 8000  # characters of the server's log shown in a failure message

# Only http://127.0.0.1 is ever opened, and never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def query(database: Path | str, sql: str, params: tuple = ()) -> list[tuple]:
    """All rows of `sql` (`?` placeholders) from `database`: a SQLite file, opened read-only,
    or a postgresql:// URL (tests/store_helpers.query)."""
    return store_query(database, sql, params)


class ServerProcess:
    """`run.py serve` on a free port of 127.0.0.1, with `workdir` as its cwd and log directory.

    Each `start()` writes the server's stdout and stderr to `workdir/server-N.log` (N counts the
    starts, so a restart keeps the earlier run's log). As a context manager it starts the server,
    waits until it is ready and, however the block ends, stops it.
    """

    def __init__(
        self,
        database: Path | str,
        keys_dir: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LICENSE_SERVER_DATABASE": str(database),
            "LICENSE_SERVER_KEYS_DIR": str(keys_dir),
            "LICENSE_SERVER_HOST": "127.0.0.1",
            "LICENSE_SERVER_PORT": str(self.port),
            "LICENSE_SERVER_RATE_LIMIT_ENABLED": "false",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.runs = 0
        self.log_path = workdir / "server-0.log"

    def start(self) -> None:
        """Starts the server; it must not be running already."""
        assert not self.running, "the server is already running"
        self.runs += 1
        self.log_path = self.workdir / f"server-{self.runs}.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "serve"],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The end of the current run's log (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-LOG_TAIL:] or "(log empty)"

    def get(self, path: str, timeout: float = 5) -> bytes:
        """The body of `GET path`; an error status or a refused connection raises `OSError`."""
        with _OPENER.open(f"{self.url}{path}", timeout=timeout) as response:
            return response.read()

    def wait_ready(self, timeout: float = 30) -> None:
        """Polls `/readyz` until it answers; fails with the log if the server exits or times out."""
        assert self.process is not None, "the server was not started"
        for _ in range(max(1, round(timeout / READY_PAUSE))):
            if self.process.poll() is not None:
                pytest.fail(
                    f"server exited with {self.process.returncode} during start-up:\n{self.log()}"
                )
            try:
                self.get("/readyz", timeout=1)
                return
            except OSError:
                time.sleep(READY_PAUSE)  # bounded start-up poll only
        pytest.fail(f"server not ready at {self.url}/readyz within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, without waiting (safe to call from an event loop); `wait()` reaps it."""
        assert self.process is not None, "the server was not started"
        self.process.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 15) -> int:
        """Waits for the server to exit; its exit code (-N: killed by signal N)."""
        assert self.process is not None, "the server was not started"
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int:
        """A clean stop: SIGTERM, then the exit code; SIGKILL if it has not exited in time."""
        assert self.process is not None, "the server was not started"
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=15)

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.running:
            self.stop()

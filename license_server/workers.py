"""`workers = N`: N server processes on one port, supervised by the process that started them.

One Python process uses one core: the verify path is CPU-bound (a signature per answer), so a
vendor with more cores runs more processes. Each worker is a whole server (`run.py serve` on
the same port with SO_REUSEPORT, so the kernel spreads connections over them) with its own
database readers and attempt-log writer on the same SQLite file (WAL; writers take turns with
`BEGIN IMMEDIATE` and the busy timeout), or on PostgreSQL later.

The supervisor does once what must happen once: it creates keys on a first run and migrates
the database before any worker starts (workers never race to migrate), and only worker 0
runs the attempt-log pruner. It restarts a worker that dies (a crash or an OOM kill must not
halve capacity silently), but gives up when workers keep dying at start-up, and it stops all
of them on SIGTERM / SIGINT. Caches stay coherent across workers the same way they stay
coherent with the CLI (`licensing.changes`), keys through the keyring's reload, and rate limits
through their shared storage, which is why more than one worker needs a shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

from license_server.runtime import open_runtime
from license_server.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# subprocess starts our own worker processes only, with fixed arguments and never a shell
# (_Supervisor.start); hence the bandit B404/B603 exemptions.
FAST_CRASH_SECONDS = 5.0  # a worker that dies sooner than this after starting "crashed early"
MAX_FAST_CRASHES = 5


def check_worker_settings(settings: Settings, workers: int) -> None:
    rate_limit = settings.rate_limit
    if workers > 1 and rate_limit.enabled and rate_limit.storage_uri.startswith("memory://"):
        raise SettingsError(
            f"setting 'workers': {workers} processes would each keep their own rate-limit "
            "counters; set rate_limit.storage_uri to a shared redis:// store "
            "(or rate_limit.enabled = false)"
        )


async def _prepare(settings: Settings) -> None:
    """Keys created and the database migrated once, before any worker exists."""
    async with open_runtime(settings):
        pass


def serve_workers(settings: Settings, workers: int, config: Path | None) -> int:
    check_worker_settings(settings, workers)
    asyncio.run(_prepare(settings))
    supervisor = _Supervisor(workers, config)
    url = f"http://{settings.host}:{settings.port}"
    print(f"License server listening on {url} with {workers} workers (Ctrl+C to stop)", flush=True)
    with _metrics_directory(settings) as directory:
        supervisor.env = {**os.environ, "LICENSE_SERVER_METRICS_DIRECTORY": str(directory)}
        return supervisor.run()


@contextlib.contextmanager
def _metrics_directory(settings: Settings):
    """Where the workers leave their metrics for each other (web/metrics_endpoint.py): the
    configured directory without the snapshots of an earlier run, or a fresh temporary one."""
    if settings.metrics.directory:
        directory = Path(settings.metrics.directory)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("worker-*.prom"):
            stale.unlink(missing_ok=True)
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="license-server-metrics-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Supervisor:
    def __init__(self, count: int, config: Path | None) -> None:
        self.count = count
        self.config = config
        self.children: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}
        self.fast_crashes = 0
        self.stopping = False
        self.env: dict[str, str] | None = None  # the workers' environment (None: ours)

    def command(self, index: int) -> list[str]:
        args = [sys.executable, "-m", "license_server"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        return [*args, "serve", "--workers", "1", "--worker-index", str(index)]

    def start(self, index: int) -> None:
        # Our own interpreter and module with fixed arguments, no shell.
        command = self.command(index)
        self.children[index] = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=self.env)  # noqa: S603  # nosec B603
        self.started_at[index] = time.monotonic()

    def stop_all(self, signum: int = signal.SIGTERM) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_all())
        for index in range(self.count):
            self.start(index)
        exit_code = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = next((i for i, c in self.children.items() if c.pid == pid), None)
            if index is None:
                continue
            child = self.children.pop(index)
            child.returncode = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            lived = time.monotonic() - self.started_at[index]
            log.warning("worker %d exited with %s after %.0f s", index, child.returncode, lived)
            self.fast_crashes = self.fast_crashes + 1 if lived < FAST_CRASH_SECONDS else 0
            if self.fast_crashes >= MAX_FAST_CRASHES:
                log.error("workers keep dying at start-up; stopping (see the lines above)")
                exit_code = 1
                self.stop_all()
                continue
            self.start(index)
        return exit_code

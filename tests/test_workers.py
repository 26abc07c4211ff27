"""`workers = N`: several server processes on one port, supervised (license_server/workers.py).

Real processes: `run.py serve` with LICENSE_SERVER_WORKERS=2 starts a supervisor and two
workers sharing the port with SO_REUSEPORT and the SQLite database. The crash test kills one
worker with SIGKILL under load: every acknowledged attempt is stored, the other worker keeps
answering, and the supervisor starts a new worker in place of the dead one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from license_server.settings import Settings
from tests.server_process import ROOT, ServerProcess
from tests.test_crash import Load, _prepare, assert_nothing_lost

AFTER_KILL = 200  # answers the surviving workers must give after the kill


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc, Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the ')'.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def test_more_than_one_worker_needs_shared_rate_limits(tmp_path):
    env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(tmp_path / "db.sqlite"),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "serve", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "workers" in line and "redis://" in line


def test_a_worker_killed_under_load_loses_nothing_and_is_replaced(tmp_path, database_url):
    database = database_url
    keys_dir = tmp_path / "keys"
    keys = asyncio.run(_prepare(Settings(database=database, keys_dir=keys_dir)))

    env = {"LICENSE_SERVER_LOG_LEVEL": "WARNING", "LICENSE_SERVER_WORKERS": "2"}
    with ServerProcess(database, keys_dir, tmp_path, env) as server:
        supervisor = server.process.pid
        workers = children_of(supervisor)
        assert len(workers) == 2, server.log()
        victim = workers[0]

        load = Load(
            keys,
            server,
            kill=lambda: os.kill(victim, signal.SIGKILL),
            after_kill=AFTER_KILL,
        )
        asyncio.run(load.run())

        # The survivor answered the rest; the supervisor replaces the dead worker (a bounded
        # wait for the replacement's start, not a timing assumption).
        for _ in range(300):
            replaced = children_of(supervisor)
            if len(replaced) == 2:
                break
            time.sleep(0.05)
        assert victim not in replaced and len(replaced) == 2, server.log()
        assert server.running, server.log()
        assert server.stop() == 0, server.log()

    assert len(load.acknowledged) >= load.after_kill
    assert_nothing_lost(database, load)

"""`bench/simulate.py --url`: a small compressed scenario replayed against a real server process
through /api/v1/verify, its alerts read back through the vendor API (an API key made with
`run.py create-api-key` against the server's database), precision and recall printed as the
offline mode prints them. The scenario is seeded; nothing is timed but the script's bounded
wait for the server's alert task to settle."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from license_server.anomaly.engine import DETECTOR_NAMES
from tests.server_process import ROOT, ServerProcess

DETECTORS = DETECTOR_NAMES
ROW = re.compile(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$")


def test_a_compressed_scenario_replayed_against_a_running_server(tmp_path, database_url):
    keys = tmp_path / "keys"
    env = {"LICENSE_SERVER_PROXY_TRUSTED_PROXIES": "127.0.0.1/32"}  # X-Forwarded-For
    with ServerProcess(database_url, keys, tmp_path, env=env) as server:
        result = subprocess.run(  # nosec B603: our own script
            [sys.executable, str(ROOT / "bench" / "simulate.py"), "--licenses", "120",
             "--days", "2", "--attacks", "1", "--seed", "2", "--url", server.url,
             "--database", str(database_url), "--settle", "60"],
            env={**os.environ, "LICENSE_SERVER_KEYS_DIR": str(keys)},
            cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        log = server.log()
    assert result.returncode == 0, result.stderr[-3000:] + log
    out = result.stdout
    assert "2 days compressed" in out and "checks sent to " + server.url in out
    assert "refused by a rate limit" not in out
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, out.splitlines()) if m}
    assert set(rows) == set(DETECTORS), out
    for alerts, true, false, missed, precision, recall in rows.values():
        assert int(missed) == 0 and float(recall) == 1.0, out  # every attack found
        assert int(true) >= 1 and int(alerts) == int(true) + int(false), out
        assert int(false) == 0 and float(precision) == 1.0, out

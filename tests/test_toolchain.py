"""The real components the other tests drive are installed (they skip without them).

`.ci/run` installs them; if it ever stops doing so, this fails loudly instead of letting the
PHP and Redis tests skip quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def test_php_with_the_extensions_modules_use():
    php = shutil.which("php")
    assert php, "php-cli is not installed (bash .ci/run installs it)"
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    present = {line.strip().lower() for line in modules.splitlines()}
    assert {"curl", "sodium", "json", "simplexml"} <= present, present


def test_redis_server_for_shared_rate_limits():
    assert shutil.which("redis-server"), "redis-server is not installed (bash .ci/run does)"


def test_chromium_for_browser_tests():
    assert os.access("/usr/bin/chromium", os.X_OK), (
        "chromium is not installed (bash .ci/run installs it; tests/browser.py drives it)"
    )

"""Dependency scan for CI: pip-audit over the installed, pinned environment (.venv).

Run by `.ci/run` after `pip install -e '.[test]'`, so what is audited is exactly what the pins
install, transitive dependencies included. The outcome is one of three, told apart on purpose:

- a known vulnerability in a dependency: print it and exit 1 (CI fails);
- the vulnerability service cannot be reached (no network, a proxy, a timeout), or the package
  index reached answers no vulnerability query (a mirror without PyPI's JSON API reports every
  package "not found"): one line saying the scan was skipped, exit 0. CI never fails for the
  network;
- anything else pip-audit reports as an error: shown, exit 1, so a broken scan is not taken for
  a clean one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_SECONDS = 300  # the whole scan; each request has its own socket timeout below
SOCKET_TIMEOUT_SECONDS = 15
NETWORK_ERRORS = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "SSLError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "timed out",
)
PREFIX = "pip-audit:"


def verdict(returncode: int | None, report: str | None, output: str) -> tuple[int, list[str]]:
    """Exit code and lines to print, from pip-audit's exit code (None: timed out), its JSON
    report (None if it wrote none) and its stdout+stderr."""
    if returncode is None:
        return 0, [f"{PREFIX} skipped: no answer within {TIMEOUT_SECONDS} s (network)"]
    dependencies = _dependencies(report)
    if dependencies is None:
        if any(marker in output for marker in NETWORK_ERRORS):
            return 0, [f"{PREFIX} skipped: the vulnerability service cannot be reached"]
        return 1, [f"{PREFIX} failed (exit {returncode}):", *output.strip().splitlines()[-20:]]
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    if vulnerable:
        lines = [f"{PREFIX} known vulnerabilities in {len(vulnerable)} pinned package(s):"]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
                lines.append(f"  {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
        return 1, lines
    audited = [dep for dep in dependencies if "skip_reason" not in dep]
    if not audited:
        return 0, [
            f"{PREFIX} skipped: the package index answered no vulnerability query "
            f"({len(dependencies)} packages not found there)"
        ]
    if returncode != 0:
        return 1, [f"{PREFIX} failed (exit {returncode}):", *output.strip().splitlines()[-20:]]
    not_found = len(dependencies) - len(audited)
    unaudited = f", {not_found} not found on the index" if not_found else ""
    return 0, [f"{PREFIX} {len(audited)} packages audited, no known vulnerabilities{unaudited}"]


def _dependencies(report: str | None) -> list[dict] | None:
    if not report:
        return None
    try:
        document = json.loads(report)
    except ValueError:
        return None
    dependencies = document.get("dependencies") if isinstance(document, dict) else None
    if not isinstance(dependencies, list):
        return None
    # The project itself is installed editable and is not on the index.
    return [
        dep for dep in dependencies if dep.get("skip_reason") != "distribution marked as editable"
    ]


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            str(pip_audit), "--skip-editable", "--progress-spinner", "off",
            "--timeout", str(SOCKET_TIMEOUT_SECONDS), "--format", "json",
            "--output", str(report_path),
        ]  # fmt: skip
        try:
            result = subprocess.run(  # noqa: S603 - our own argv, no shell
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            returncode, output = None, ""
        else:
            returncode, output = result.returncode, result.stdout + result.stderr
        report = report_path.read_text() if report_path.exists() else None
    code, lines = verdict(returncode, report, output)
    print("\n".join(lines), file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())

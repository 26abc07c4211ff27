"""The CI dependency scan (.ci/audit_deps.py): a vulnerability fails CI, the network never does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / ".ci" / "audit_deps.py"
_spec = importlib.util.spec_from_file_location("audit_deps", PATH)
audit_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit_deps)

EDITABLE = {"name": "license-server", "skip_reason": "distribution marked as editable"}
CLEAN = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
NOT_FOUND = {
    "name": "pyjwt",
    "skip_reason": "Dependency not found on PyPI and could not be audited",
}
VULNERABLE = {
    "name": "jinja2",
    "version": "3.1.0",
    "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["3.1.3"], "aliases": []}],
}


def report(*dependencies) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_a_known_vulnerability_fails():
    code, lines = audit_deps.verdict(1, report(EDITABLE, CLEAN, VULNERABLE), "Found 1 known")
    assert code == 1
    assert lines[1] == "  jinja2 3.1.0: GHSA-xxxx (fixed in 3.1.3)"


def test_a_clean_audit_passes_and_says_what_it_covered():
    code, lines = audit_deps.verdict(0, report(EDITABLE, CLEAN, NOT_FOUND), "")
    assert (code, lines) == (
        0,
        ["pip-audit: 1 packages audited, no known vulnerabilities, 1 not found on the index"],
    )


def test_an_index_that_answers_no_query_is_a_skip_not_a_pass():
    code, lines = audit_deps.verdict(0, report(EDITABLE, NOT_FOUND, NOT_FOUND), "No known")
    assert code == 0 and lines == [
        "pip-audit: skipped: the package index answered no vulnerability query "
        "(2 packages not found there)"
    ]


@pytest.mark.parametrize(
    "output",
    [
        "requests.exceptions.ProxyError: HTTPSConnectionPool(...): Max retries exceeded",
        "requests.exceptions.ConnectionError: [Errno -3] Temporary failure in name resolution",
        "requests.exceptions.ReadTimeout: Read timed out. (read timeout=15)",
    ],
)
def test_an_unreachable_service_is_one_line_and_never_fails(output):
    code, lines = audit_deps.verdict(1, None, "Traceback ...\n" + output)
    assert (code, len(lines)) == (0, 1) and "skipped" in lines[0]


def test_a_scan_that_does_not_finish_is_skipped():
    code, lines = audit_deps.verdict(None, None, "")
    assert code == 0 and "skipped" in lines[0]


@pytest.mark.parametrize("bad_report", [None, "", "not json", "[]", '{"dependencies": 3}'])
def test_any_other_error_fails_rather_than_passing_silently(bad_report):
    code, lines = audit_deps.verdict(2, bad_report, "usage: pip-audit: error: bad option")
    assert code == 1 and lines[-1] == "usage: pip-audit: error: bad option"

"""Structured JSON logs (`[logging] format`) and PII masking in both formats.

A license key, an e-mail address and a full IP address, put in a message, in an extra field
and in a traceback, never reach the output of either format (log_masking.PiiFilter; ASVS 4.0.3
V7.1.1, V8.3.4); JSON lines parse and carry the fields they promise.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys

import pytest

from license_server import log_format, log_masking
from license_server.settings import SettingsError, load_settings
from license_server.web.access_log import JSON_FORMAT, BatchedLineWriter, MaskedAccessLogger
from tests.server_process import ROOT
from tests.test_access_log import Request, Response

KEY = "MYMOD-" + "A" * 100 + "EFGH"
EMAIL = "ops.lead@smith.example"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8:1234:5678::1"
SECRETS = (KEY, EMAIL, "ops.lead", IPV4, "5678::1", "2001:db8:1234:5678")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(params=["text", "json"])
def output(request):
    """The root logger as run.py sets it up (`log_format.handler_for` + the PII filter)."""
    stream = io.StringIO()
    handler = log_format.handler_for(request.param, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    log_masking.install()
    try:
        yield request.param, stream
    finally:
        root.removeHandler(handler)


def log_everything() -> None:
    log = logging.getLogger("license_server.test")
    log.warning(
        "refused %s for %s from %s and %s",
        KEY,
        EMAIL,
        IPV4,
        IPV6,
        extra={"client": EMAIL, "peer": IPV4, "detail": {"key": KEY, "ips": [IPV6]}},
    )
    try:
        raise ValueError(f"input_value='{EMAIL}' key {KEY} from {IPV4} via {IPV6}")
    except ValueError:
        log.exception("unhandled error for %s", IPV4)


def assert_nothing_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


def test_message_extra_and_traceback_are_masked_in_both_formats(output):
    _kind, stream = output
    log_everything()
    text = stream.getvalue()
    assert_nothing_secret(text)
    assert "MYMOD-...EFGH" in text and "o...@smith.example" in text
    assert "203.0.113.0/24" in text and "2001:db8:1234::/48" in text
    assert "Traceback" in text


def test_json_lines_carry_time_level_logger_message_extras_and_exception(output):
    kind, stream = output
    if kind != "json":
        pytest.skip("JSON only")
    log_everything()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert RFC3339_UTC.match(first["time"])
    assert first["level"] == "WARNING" and first["logger"] == "license_server.test"
    assert first["message"].startswith("refused MYMOD-...EFGH for o...@smith.example")
    assert first["client"] == "o...@smith.example" and first["peer"] == "203.0.113.0/24"
    assert first["detail"] == {"key": "MYMOD-...EFGH", "ips": ["2001:db8:1234::/48"]}
    assert "exception" not in first
    assert second["level"] == "ERROR"
    assert second["exception"].startswith("Traceback") and "ValueError" in second["exception"]


def test_a_message_cannot_forge_a_json_line(output):
    kind, stream = output
    if kind != "json":
        pytest.skip("JSON only")
    logging.getLogger("x").warning("user said %s", 'a\n{"level": "CRITICAL"}\x1b[31m')
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == 'user said a\n{"level": "CRITICAL"}\x1b[31m'


def test_text_without_secrets_is_unchanged(output):
    _kind, stream = output
    logging.getLogger("x").warning("batch of 12 at 12:30:45 v1.2.3 on 10.0")
    assert "batch of 12 at 12:30:45 v1.2.3 on 10.0" in stream.getvalue()


def test_an_unserialisable_extra_is_written_as_masked_text(output):
    _kind, stream = output

    class Thing:
        def __repr__(self) -> str:
            return f"Thing({EMAIL})"

        __str__ = __repr__

    logging.getLogger("x").warning("thing", extra={"thing": Thing()})
    assert_nothing_secret(stream.getvalue())


def test_ip_masking_in_free_text():
    mask = log_masking.mask_ips
    assert mask(f"from {IPV4}:6379.") == "from 203.0.113.0/24:6379."
    assert mask("[2001:db8::1]:443") == "[2001:db8::/48]:443"
    assert mask("::ffff:198.51.100.9") == "198.51.100.0/24"
    assert mask("v1.2.3.4.5 at 12:30:45, 999.1.1.1") == "v1.2.3.4.5 at 12:30:45, 999.1.1.1"


async def test_access_log_json_lines_have_their_fields_masked():
    stream = io.StringIO()
    access = MaskedAccessLogger(logging.getLogger("aiohttp.access"), JSON_FORMAT)
    access.writer = BatchedLineWriter(stream)
    request = Request(f"WHMCS/8.9 {EMAIL}\n{{fake}}", remote=IPV6)
    request.path = f"/admin/licenses/{KEY}"
    access.log(request, Response(), 0.0012)
    await asyncio.sleep(0)
    (line,) = stream.getvalue().splitlines()
    assert_nothing_secret(line)
    fields = json.loads(line)
    assert RFC3339_UTC.match(fields["time"])
    assert fields["level"] == "INFO" and fields["logger"] == "aiohttp.access"
    assert fields["remote"] == "2001:db8:1234::/48"
    assert fields["method"] == "POST" and fields["path"] == "/admin/licenses/MYMOD-...EFGH"
    assert (fields["status"], fields["bytes"], fields["duration_ms"]) == (200, 850, 1.2)
    assert fields["user_agent"].startswith("WHMCS/8.9 o...@smith.example\\n")
    assert fields["message"].startswith('2001:db8:1234::/48 "POST /admin/licenses/MYMOD-...EFGH"')


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert log_format.resolved_format("auto", Terminal()) == "text"
    assert log_format.resolved_format("auto", io.StringIO()) == "json"
    assert log_format.resolved_format("text", io.StringIO()) == "text"
    assert log_format.resolved_format("json", Terminal()) == "json"


def test_format_setting_is_checked(tmp_path):
    assert load_settings(None, environ={}).logging.format == "text"  # the default
    settings = load_settings(None, environ={"LICENSE_SERVER_LOGGING_FORMAT": "json"})
    assert settings.logging.format == "json"
    with pytest.raises(SettingsError, match=r"logging\.format"):
        load_settings(None, environ={"LICENSE_SERVER_LOGGING_FORMAT": "xml"})


def test_a_process_set_up_for_json_writes_masked_json_to_stderr(tmp_path):
    """The set-up run.py makes (`log_format.configure`), in a fresh interpreter."""
    script = (
        "import logging; from license_server import log_format; "
        "log_format.configure('INFO', 'json'); "
        f"logging.getLogger('license_server.x').info('hello %s', {IPV4!r}, "
        f"extra={{'who': {EMAIL!r}}})"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    fields = json.loads(line)
    assert fields["message"] == "hello 203.0.113.0/24" and fields["who"] == "o...@smith.example"

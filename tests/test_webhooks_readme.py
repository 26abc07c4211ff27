"""The README's receiver snippets (Python and PHP) verify real signed deliveries, and refuse a
tampered body, another key and a stale timestamp."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from license_server.crypto.signing import generate_key
from license_server.webhooks.signing import public_key_text, signature_headers

README = Path(__file__).resolve().parent.parent / "README.md"
BODY = b'{"type":"license.created","timestamp":"2026-01-01T00:00:00.000Z","data":{"id":1}}'


def _snippet(language: str, marker: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
    [block] = [b for b in blocks if marker in b]
    return block


def _cases():
    key, _ = generate_key(1)
    other, _ = generate_key(2)
    now = int(time.time())
    good = signature_headers(key, "msg_abc", now, BODY)
    stale = signature_headers(key, "msg_abc", now - 600, BODY)
    return (
        public_key_text(key),
        [
            (good, BODY, True),
            (good, BODY.replace(b"1}", b"2}"), False),  # tampered body
            (signature_headers(other, "msg_abc", now, BODY), BODY, False),  # another key
            (stale, BODY, False),  # older than 5 minutes
            ({**good, "webhook-id": "msg_other"}, BODY, False),
            ({**good, "webhook-signature": "v1," + good["webhook-signature"][4:]}, BODY, False),
            ({**good, "webhook-signature": "v1a,%%%"}, BODY, False),
            ({**good, "webhook-signature": "v1a,AAAA " + good["webhook-signature"]}, BODY, True),
        ],
    )


def test_the_python_snippet():
    namespace: dict = {}
    exec(compile(_snippet("python", "webhook-verify-python"), "README", "exec"), namespace)
    public, cases = _cases()
    for headers, body, expected in cases:
        assert namespace["webhook_verify"](public, headers, body) is expected, headers


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli is not installed")
def test_the_php_snippet(tmp_path):
    probe = "echo function_exists('sodium_crypto_sign_verify_detached') ? 1 : 0;"
    check = subprocess.run(["php", "-r", probe], capture_output=True, text=True, check=True)
    if check.stdout.strip() != "1":
        pytest.skip("php has no sodium")
    script = tmp_path / "verify.php"
    script.write_text(
        _snippet("php", "webhook-verify-php")
        + "\n$in = json_decode(file_get_contents('php://stdin'), true);\n"
        "echo webhook_verify($in['key'], $in['headers'], base64_decode($in['body'])) "
        "? 'ok' : 'bad';\n"
    )
    public, cases = _cases()
    import base64

    for headers, body, expected in cases:
        data = {"key": public, "headers": headers, "body": base64.b64encode(body).decode()}
        result = subprocess.run(["php", str(script)], input=json.dumps(data),
                                capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        assert result.stdout == ("ok" if expected else "bad"), (headers, result.stderr)

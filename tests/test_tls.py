"""TLS served directly (issue #12): tls_cert/tls_key, TLS 1.2 minimum, HSTS only over TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server_process import ROOT
from tests.services import free_port, stop_process


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(cert_path, maximum=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert_path))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


@pytest.fixture
def tls_server(tmp_path, database_url):
    cert_path, key_path = self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
        "LICENSE_SERVER_PORT": str(port),
        "LICENSE_SERVER_TLS_CERT": str(cert_path),
        "LICENSE_SERVER_TLS_KEY": str(key_path),
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "serve"], cwd=tmp_path, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    context = client_context(cert_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", context=context, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                pytest.fail((tmp_path / "server.log").read_text())
            time.sleep(0.05)  # bounded readiness poll of the child process
    try:
        yield url, cert_path, port
    finally:
        stop_process(process)
        log.close()


def test_https_with_hsts_and_the_set_up_link(tls_server, tmp_path):
    url, cert_path, _ = tls_server
    with urllib.request.urlopen(url + "/admin/login", context=client_context(cert_path)) as r:
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert f"{url}/admin/setup/" in (tmp_path / "server.log").read_text()


def test_tls_below_1_2_is_refused(tls_server):
    url, cert_path, _ = tls_server
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, which is the point
        old = client_context(cert_path, maximum=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
    with pytest.raises((ssl.SSLError, OSError)):
        urllib.request.urlopen(url + "/healthz", context=old, timeout=5)
    ok = client_context(cert_path, maximum=ssl.TLSVersion.TLSv1_2)
    with urllib.request.urlopen(url + "/healthz", context=ok, timeout=5) as r:
        assert r.status == 200  # TLS 1.2 itself is served


async def test_no_hsts_over_plain_http(client):
    response = await client.get("/admin/login")
    assert "Strict-Transport-Security" not in response.headers


def test_a_half_tls_configuration_is_one_line(tmp_path):
    from license_server.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="tls_cert and tls_key"):
        load_settings(path=None, environ={"LICENSE_SERVER_TLS_CERT": str(tmp_path / "c.pem")})


def test_the_server_context_sets_the_minimum_itself(tmp_path):
    """Not left to the local OpenSSL's defaults (which may allow TLS 1.0 elsewhere)."""
    from license_server.cli import _tls_context
    from license_server.settings import Settings

    cert_path, key_path = self_signed(tmp_path)
    context = _tls_context(Settings(tls_cert=cert_path, tls_key=key_path))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2

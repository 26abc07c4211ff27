"""Helpers for tests of the verification endpoints: issue licenses, check with the client."""

from __future__ import annotations

import secrets

from license_server.client import LicenseClient, parse_signature_header
from license_server.licensing.specs import LicenseSpec, ProductSpec


def public_keys(runtime) -> dict:
    return {key.kid: key.public_key for key in runtime.keyring.keys}


def reference_client(client, runtime) -> LicenseClient:
    return LicenseClient(str(client.make_url("")), public_keys(runtime), session=client.session)


async def product(runtime, code: str = "mymod", **options):
    options.setdefault("name", "My Module")
    return await runtime.licenses.create_product(ProductSpec(code=code, **options))


async def issue(runtime, product_code: str = "mymod", **options) -> tuple[object, str]:
    options.setdefault("licensee", "Smith & Sons")
    options.setdefault("email", "ops@smith.example")
    return await runtime.licenses.issue(LicenseSpec(product=product_code, **options))


def nonce() -> str:
    return secrets.token_urlsafe(24)


async def attempts(runtime) -> list[dict]:
    async with runtime.db.read() as conn:
        return await conn.fetch_all("SELECT * FROM verification_attempts ORDER BY id")


def assert_signed(runtime, response, body: bytes) -> None:
    """The License-Signature header verifies over exactly these body bytes."""
    kid, signature = parse_signature_header(response.headers["License-Signature"])
    public_keys(runtime)[kid].verify(signature, body)  # raises InvalidSignature if forged


# How a middleman spoils an answer -> the reason both shipped clients must give for it, treating
# it as an outage ("unverified"). "stale" spoils nothing: the client's clock moves instead.
FAILED_CHECKS = {
    "strip": "tampered",
    "wrong_signature": "tampered",
    "tamper": "tampered",
    "replay": "bad_nonce",
    "stale": "stale_response",
}

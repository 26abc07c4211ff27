"""The webhook signing key and the Standard Webhooks signature (asymmetric, `v1a`).

Each delivery carries (https://www.standardwebhooks.com/, the asymmetric scheme):
- `webhook-id`: the event's id (`msg_...`), the same on every retry and for every endpoint,
  so a receiver drops duplicates by it;
- `webhook-timestamp`: Unix seconds when this attempt was signed;
- `webhook-signature`: `v1a,<base64 Ed25519 signature>` over the bytes
  `{webhook-id}.{webhook-timestamp}.{body}`.
A receiver verifies with the published public key (`whpk_<base64 of the 32-byte key>`, on the
admin's webhooks page and at `GET /api/v1/webhooks/public-key`) and rejects timestamps more
than 5 minutes from its clock (replay). Ed25519 rather than the shared-secret `v1` HMAC: no
secret is handed to every receiver, and one key serves all endpoints.

A key of its own (RFC 8725 §3.9, ASVS 4.0.3 V6.4.2: one key per purpose), in
`<keys_dir>/webhooks/<created-ns>.pem` (mode 0600, made on first run under the directory lock
so that processes starting together make one; the keys directory is never committed). The
newest file signs. To rotate, add a new `<nanoseconds>.pem` and restart; receivers must have
the new public key first.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from license_server.crypto.keyfiles import directory_lock, ensure_private_dir, write_secret
from license_server.crypto.signing import SigningKey, generate_key, load_key_file

WEBHOOK_KEY_DIR = "webhooks"
PUBLIC_KEY_PREFIX = "whpk_"
SIGNATURE_VERSION = "v1a"
TOLERANCE_SECONDS = 300  # what receivers should accept; the README says so


def _pem_paths(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.pem") if p.stem.isdigit())


def load_webhook_key(keys_dir: Path) -> SigningKey:
    """The key that signs webhook deliveries, created on first run."""
    directory = keys_dir / WEBHOOK_KEY_DIR
    ensure_private_dir(directory)
    if not _pem_paths(directory):
        with directory_lock(directory):
            if not _pem_paths(directory):
                key, pem = generate_key(time.time_ns())
                write_secret(directory / f"{key.created_at}.pem", pem)
    return load_key_file(_pem_paths(directory)[-1])


def public_key_text(key: SigningKey) -> str:
    """The public key as Standard Webhooks writes it: `whpk_` + base64 of the raw key."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(key.public_raw).decode("ascii")


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    signature = key.private_key.sign(signed_content(msg_id, timestamp, body))
    return f"{SIGNATURE_VERSION},{base64.b64encode(signature).decode('ascii')}"


def signature_headers(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> dict:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }

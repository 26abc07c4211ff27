"""Signing what the server says: answer signatures and local-key tokens.

- `signature_header(body)`: the `License-Signature` header, an Ed25519 signature over the exact
  body bytes with the key id (`keyid="…", algorithm="ed25519", signature="<base64>"`), so a
  module can tell a genuine answer from a forged server or a proxy that rewrote it.
- `sign_local_key(claims)`: an EdDSA JWT (RFC 7519 / RFC 8037, `kid` header) that a module may
  cache and trust offline until `exp`; pyjwt does the JWS encoding.
"""

from __future__ import annotations

import base64
from typing import Any

import jwt

from license_server.crypto.signing import Keyring


def signature_header(keyring: Keyring, body: bytes) -> str:
    kid, signature = keyring.sign(body)
    encoded = base64.b64encode(signature).decode("ascii")
    return f'keyid="{kid}", algorithm="ed25519", signature="{encoded}"'


def sign_local_key(keyring: Keyring, claims: dict[str, Any]) -> str:
    key = keyring.active
    return jwt.encode(
        claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "JWT"}
    )

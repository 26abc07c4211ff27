"""The WHMCS Licensing Addon answer format, and its Ed25519 signature tag.

One `<tag>value</tag>` per line, no root element, no XML declaration (DESIGN.md). Modules parse
it two ways: the sample's regex `/<(.*?)>([^<]+)<\\/\\1>/i` (a value containing `<` breaks it,
an empty value vanishes) or by wrapping it in a root element for an XML parser (a bare `&`
breaks that, and some then fail open). So values are escaped as `&amp;`, `&lt;`, `&gt;`, and
line breaks are flattened so that one tag stays one line.

The last line, `<licensesignature>KID.SIG</licensesignature>`, is our addition for upgraded
modules (legacy ones ignore unknown tags): SIG is base64url Ed25519 over
`b"whmcs-compat-v1\\n" + check_token + b"\\n" + <every byte before that line>`. Binding the
module's check_token makes a recorded answer useless for another check, which WHMCS's md5hash
(over a secret every copy of the module carries) cannot do.
"""

from __future__ import annotations

import base64

from license_server.crypto.signing import Keyring

SIGNATURE_TAG = "licensesignature"
_DOMAIN = b"whmcs-compat-v1\n"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " "})


def escape(value: object) -> str:
    return str(value).translate(_ESCAPES)


def render(tags: list[tuple[str, object]], keyring: Keyring, check_token: str) -> bytes:
    body = "".join(f"<{name}>{escape(value)}</{name}>\n" for name, value in tags).encode()
    kid, signature = keyring.sign(_DOMAIN + check_token.encode() + b"\n" + body)
    encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return body + f"<{SIGNATURE_TAG}>{kid}.{encoded}</{SIGNATURE_TAG}>".encode()


def signed_part(body: bytes) -> tuple[bytes, str, bytes] | None:
    """Split an answer into (signed bytes, kid, signature); None if it carries no signature."""
    start = body.rfind(f"<{SIGNATURE_TAG}>".encode())
    end = body.rfind(f"</{SIGNATURE_TAG}>".encode())
    if start < 0 or end < start or (start and body[start - 1 : start] != b"\n"):
        return None
    kid, _, signature = body[start + len(SIGNATURE_TAG) + 2 : end].decode().partition(".")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        return None
    return body[:start], kid, raw


def verify(body: bytes, check_token: str, keyring: Keyring) -> bool:
    """What an upgraded module does (the PHP client has the same check)."""
    parts = signed_part(body)
    if parts is None:
        return False
    signed, kid, signature = parts
    return keyring.verify(kid, _DOMAIN + check_token.encode() + b"\n" + signed, signature)

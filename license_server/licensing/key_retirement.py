"""May a signing key be retired (dropped from the JWKS and from verification)?

Only once nothing it signed can still be valid, or modules that hold it would be switched off
(DESIGN.md: "retired keys stay published until every token they signed has expired"):

- License keys never expire: a key that signed a license that is not revoked must stay. The
  signer is recorded at issue (`licenses.signing_kid`); for licenses issued before that column
  existed, the one-byte key hint inside the key is read instead (a hint shared by two keys
  counts for both: when unsure, the key stays).
- Local keys and signed answers live at most `local_key_days + grace_days` of the longest
  product after the key stopped signing, plus a margin for running servers that had not yet
  picked up the activation of its successor and for minted tokens they reuse.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from license_server.crypto.keystore import KeyRecord
from license_server.crypto.signing import kid_hint
from license_server.db import licenses as license_rows
from license_server.licensing.license_keys import key_hint
from license_server.licensing.service import LicenseService

# Longer than any server takes to notice an activation (about a second) and than a minted
# local key is reused (a minute): a safe upper bound on signing after `signing_until`.
SIGNING_LAG_SECONDS = 3600


@dataclass(frozen=True)
class SignedByKey:
    live_licenses: int  # not revoked, key signed by this signing key
    offline_seconds: int  # longest local key + grace of any product


async def signed_by(service: LicenseService, kid: str) -> SignedByKey:
    hint = kid_hint(kid)
    async with service.db.read() as conn:
        live = await license_rows.count_live_signed_by(conn, kid)
        unrecorded = await license_rows.live_signed_without_kid(conn)
        offline_days = await license_rows.longest_offline_days(conn)
    for row in unrecorded:
        text = service.cipher.decrypt("licenses", "key_encrypted", row["key_encrypted"])
        if key_hint(text) in (hint, None):  # an unreadable key counts: when unsure, keep
            live += 1
    return SignedByKey(live, offline_days * 86400)


def refusal(evidence: SignedByKey, record: KeyRecord, now: int) -> str | None:
    """Why the key must stay published, or None when it may be retired now."""
    if evidence.live_licenses:
        count = evidence.live_licenses
        return (
            f"it signed {count} license key{'' if count == 1 else 's'} not revoked"
            " (license keys never expire: revoke them first, or keep the key)"
        )
    if record.signing_from is None:
        return None  # published only, it never signed anything
    if record.signing_until is None:
        return "it is still signing"
    valid_until = record.signing_until + evidence.offline_seconds + SIGNING_LAG_SECONDS
    if now < valid_until:
        when = dt.datetime.fromtimestamp(valid_until, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"local keys and answers it signed may be valid until {when}"
    return None

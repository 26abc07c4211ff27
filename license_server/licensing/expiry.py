"""The expiry sweep: licenses past their expiry date become `expired` in the database.

A check already treats such a license as expired (`lifecycle.effective_status`) without any
write; what the sweep adds is the recorded transition, so that the change log, the audit log
and the `license.expired` webhook event happen, each exactly once per expiry: the transition
is only allowed from active or pending, decided on the locked row (`expire_if_lapsed`). Run by
the maintenance process every `[webhooks] expiry_sweep_seconds` (app.py).
"""

from __future__ import annotations

from license_server.db import licenses as license_rows
from license_server.licensing.service import LicenseService

BATCH = 500


async def expire_lapsed(service: LicenseService, *, batch: int = BATCH) -> int:
    """Expire every lapsed license, a transaction each; how many this call expired."""
    expired = 0
    while True:
        async with service.db.read() as conn:
            ids = await license_rows.lapsed_license_ids(conn, service.now(), batch)
        this_batch = 0
        for license_id in ids:
            if await service.expire_if_lapsed(license_id):
                this_batch += 1
        expired += this_batch
        if len(ids) < batch or this_batch == 0:
            return expired

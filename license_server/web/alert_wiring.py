"""Start-up wiring of what acts on alerts: the temporary IP blocks, the automatic actions
(licensing/alert_actions.py) listening to `runtime.alerts`, and the verify path honouring the
blocks when some detector's action is `block_ip` (otherwise a check pays nothing for them).
The admin's sign-in limiter and the staff-side detectors pick `IP_BLOCKS` and
`ALERT_ACTIONS` up in `admin.staff_ctx`, which runs after this."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from license_server import appkeys
from license_server.licensing.alert_actions import AlertActions
from license_server.web.rate_limit import BLOCK_ALL, BLOCK_SIGN_IN, IpBlocks, block_target

IP_BLOCKS = web.AppKey("ip_blocks", IpBlocks)
ALERT_ACTIONS = web.AppKey("alert_actions", AlertActions)


async def alert_actions_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    runtime = app[appkeys.RUNTIME]
    blocks = IpBlocks(
        settings.rate_limit.storage_uri,
        {BLOCK_ALL: settings.alert_actions.block_minutes,
         BLOCK_SIGN_IN: settings.staff.sign_in_block_minutes},
    )  # fmt: skip
    if "block_ip" in settings.alert_actions.detectors.values():
        app[appkeys.RATE_LIMITER].honour_blocks(blocks)
    actions = AlertActions(
        runtime.licenses, settings.alert_actions.action, blocks, block_target,
        settings.alert_actions.block_minutes,
    )  # fmt: skip
    runtime.alerts.subscribe(actions.listener)
    app[IP_BLOCKS] = blocks
    app[ALERT_ACTIONS] = actions
    yield
    await actions.drain()
    blocks.close()

"""The audit log's hash chain (issue #12): an edited or deleted row is found and named by
`run.py audit-verify`; concurrent appends never fork the chain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from license_server.licensing.actors import CLI, Actor, ActorKind
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec
from license_server.runtime import open_runtime
from tests.conftest import PRODUCT
from tests.server_process import ROOT
from tests.store_helpers import execute


def audit_verify(settings) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(settings.database_location()),
        "LICENSE_SERVER_KEYS_DIR": str(settings.keys_dir),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "audit-verify"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


async def fill(settings) -> None:
    async with open_runtime(settings) as runtime:
        await runtime.licenses.create_product(PRODUCT, actor=CLI)
        license, _ = await runtime.licenses.issue(
            LicenseSpec(product="mymod", licensee="A", email="a@example.org"), actor=CLI
        )
        for action in (Action.SUSPEND, Action.UNSUSPEND, Action.REVOKE):
            await runtime.licenses.apply(license.id, action, actor=CLI)


async def test_an_edited_or_deleted_row_is_named(settings):
    await fill(settings)
    result = audit_verify(settings)
    assert result.returncode == 0 and "5 rows, the chain is intact" in result.stdout
    async with open_runtime(settings) as runtime:
        # Someone with the database covers a tracked change up: the chain names the row.
        await execute(runtime.db, "UPDATE audit_log SET actor_id = 'someone' WHERE id = 3")
    result = audit_verify(settings)
    assert result.returncode == 1
    assert "row 3 breaks the chain: its content was changed" in result.stderr
    async with open_runtime(settings) as runtime:
        await execute(runtime.db, "DELETE FROM audit_log WHERE id = 3")
    result = audit_verify(settings)
    assert result.returncode == 1 and "row 4 breaks the chain: the row before it" in result.stderr


async def test_concurrent_appends_keep_one_chain(runtime):
    audit = runtime.licenses.audit

    async def one(n: int) -> None:
        async with runtime.db.write() as conn:
            await audit.append(conn, at=n, actor=Actor(ActorKind.STAFF, str(n)), action="x")

    await asyncio.gather(*(one(n) for n in range(30)))
    checked, broken = await audit.verify(runtime.db)
    assert (checked, broken) == (30, None)

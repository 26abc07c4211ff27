"""The admin's staff page (issue #12): invitations with a role, disabling, resetting the
authenticator; every change audited, and sessions ended where it matters."""

from __future__ import annotations

import re

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from tests.test_admin import PASSWORD, Browser
from tests.test_admin_licenses import staff_session


async def test_an_invited_member_gets_the_role_of_the_invitation(client):
    admin = await staff_session(client, "admin")
    response, page = await admin.post("/admin/staff/invite", {"csrf": "csrf-admin",
                                                              "role": "support"})  # fmt: skip
    assert response.status == 200
    link = re.search(r'class="secret">(http[^<]+)<', page).group(1)
    path = link.split("127.0.0.1")[1].split("/", 1)[1]
    newcomer = Browser(client)
    form = {"email": "sam@example.org", "name": "Sam", "password": PASSWORD, "confirm": PASSWORD}
    response, _ = await newcomer.post("/" + path, form)
    assert response.status == 200
    async with client.app[RUNTIME].db.read() as conn:
        sam = await staff_rows.account_by_email(conn, "sam@example.org")
    assert sam.role == "support"
    response, page = await admin.post("/admin/staff/invite", {"csrf": "csrf-admin",
                                                              "role": "root"})  # fmt: skip
    assert response.status == 400 and "role: one of" in page


async def test_disabling_ends_the_sessions_and_reset_asks_for_a_new_authenticator(client):
    admin = await staff_session(client, "admin")
    member = await staff_session(client, "license_manager")
    response, _ = await member.get("/admin/licenses")
    assert response.status == 200
    async with client.app[RUNTIME].db.read() as conn:
        manager = await staff_rows.account_by_email(conn, "license_manager@example.org")
    response, _ = await admin.post(f"/admin/staff/{manager.id}/disable", {"csrf": "csrf-admin"})
    assert response.status == 303
    response, _ = await member.get("/admin/licenses")
    assert response.status == 303  # signed out at once
    await admin.post(f"/admin/staff/{manager.id}/enable", {"csrf": "csrf-admin"})
    response, _ = await admin.post(f"/admin/staff/{manager.id}/reset-mfa", {"csrf": "csrf-admin"})
    assert response.status == 303
    async with client.app[RUNTIME].db.read() as conn:
        manager = await staff_rows.account_by_email(conn, "license_manager@example.org")
        actions = [row["action"] for row in await staff_rows.audit_page(conn, None, 5)]
    assert manager.totp_secret is None and not manager.disabled
    assert actions[:3] == ["staff.reset_mfa", "staff.enable", "staff.disable"]
    async with client.app[RUNTIME].db.read() as conn:
        me = await staff_rows.account_by_email(conn, "admin@example.org")
    response, page = await admin.post(f"/admin/staff/{me.id}/disable", {"csrf": "csrf-admin"})
    assert response.status == 400 and "your own account" in page

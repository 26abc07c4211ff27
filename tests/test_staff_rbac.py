"""Staff RBAC: the whole role x permission matrix, wildcards, unknown roles and permissions."""

from __future__ import annotations

import pytest

from license_server.staff import rbac
from license_server.staff.rbac import (
    PERMISSIONS,
    RESOURCES,
    ROLES,
    PermissionDenied,
    has_permission,
    permissions_of,
    require,
    role_permissions,
)

SECRETS = {"license:reveal_key", "webhook:reveal_secret"}

# The matrix as a reader would check it, written out independently of the wildcards.
EXPECTED = {
    "admin": set(PERMISSIONS),
    "license_manager": {
        p for p in PERMISSIONS if p.split(":")[0] in ("license", "product", "binding", "ban")
    }
    | {"attempt:read", "alert:read", "alert:acknowledge", "audit:read", "signing_key:read"},
    "support": {
        "license:read",
        "license:reissue",
        "product:read",
        "binding:read",
        "binding:release",
        "ban:read",
        "attempt:read",
    },
    "read_only": {p for p in PERMISSIONS if p.endswith(":read")},
}


def test_the_catalogue_covers_every_resource_the_admin_needs():
    assert set(RESOURCES) == {
        "license",
        "product",
        "binding",
        "ban",
        "attempt",
        "staff",
        "api_key",
        "webhook",
        "alert",
        "audit",
        "security_event",
        "settings",
        "signing_key",
    }
    assert all(f"{resource}:read" in PERMISSIONS for resource in RESOURCES)
    assert set(ROLES) == set(EXPECTED)


@pytest.mark.parametrize("role", sorted(EXPECTED))
@pytest.mark.parametrize("permission", sorted(PERMISSIONS))
def test_the_whole_matrix(role, permission):
    allowed = permission in EXPECTED[role]
    assert has_permission(role, permission) is allowed
    if allowed:
        require(role, permission)
    else:
        with pytest.raises(PermissionDenied) as denied:
            require(role, permission)
        assert (denied.value.role, denied.value.permission) == (role, permission)


def test_secrets_are_shown_only_to_admin_and_license_manager():
    shown = {role: permissions_of(role) & SECRETS for role in ROLES}
    assert shown == {
        "admin": SECRETS,
        "license_manager": {"license:reveal_key"},  # to read a key out to its customer
        "support": set(),
        "read_only": set(),
    }


def test_nobody_but_admin_changes_who_can_act():
    powerful = {
        p
        for p in PERMISSIONS
        if p.split(":")[0] in ("staff", "api_key", "webhook", "settings", "signing_key")
        and not p.endswith(":read")
    }
    for role in ROLES:
        assert permissions_of(role) & powerful == (powerful if role == "admin" else set())


@pytest.mark.parametrize(
    "role", ["", "Admin", "ADMIN", "admin ", "superuser", "*", None, 1, b"admin", ["admin"]]
)
def test_an_unknown_role_has_nothing(role):
    assert permissions_of(role) == frozenset()
    for permission in PERMISSIONS:
        assert not has_permission(role, permission)
    with pytest.raises(PermissionDenied):
        require(role, "license:read")


@pytest.mark.parametrize(
    "permission", ["*", "license:*", "license", "licence:read", "license:READ", "", "x:y:z"]
)
def test_asking_for_a_permission_outside_the_catalogue_is_a_bug(permission):
    with pytest.raises(ValueError):
        has_permission("admin", permission)
    with pytest.raises(ValueError):
        require("admin", permission)


@pytest.mark.parametrize("grant", ["licence:*", "license:destroy", "*:read", "", "license"])
def test_a_grant_outside_the_catalogue_fails_at_import(grant):
    with pytest.raises(ValueError):
        rbac._expand(grant)


def test_grants_are_written_as_the_seed_writes_them():
    for grants in role_permissions.values():
        for grant in grants:
            assert grant == "*" or grant.endswith(":*") or grant in PERMISSIONS
    assert role_permissions["admin"] == ["*"]

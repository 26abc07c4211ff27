"""Staff roles and `resource:action` permissions (seed 000 "Role-Based Access Control").

`role_permissions` is written as the seed writes it: a list of grants per role, where `*` is
every permission and `resource:*` every action on one resource. It is expanded once, at import,
against `PERMISSIONS`, the catalogue of every permission that exists; a grant naming anything
outside the catalogue fails the import, and asking about a permission outside it is a
programming error (ValueError), so a mistyped permission in a route cannot silently allow or
deny. An unknown role has no permission (ASVS 4.0.3 V4.1.5: fail closed).

Checked in the route and again in the service (DESIGN.md; ASVS V4.1.1, V4.1.3 least privilege):
`require` raises `PermissionDenied`, which the web layer turns into 403.

The grants, and why:
- admin: everything, including staff accounts, API keys, webhooks and settings.
- license_manager: runs the licensing business: licenses, products, bindings and bans in full;
  reads the verification attempts, alerts and audit log that tell it about abuse, and may
  acknowledge alerts, since acting on them (suspending a shared key) is its job. It cannot touch
  staff, API keys, webhooks or settings, which change who and what can act on the server.
- support: answers customers: reads licenses, products, bindings, bans and attempts ("why is my
  site refused?"), and may release a binding or reissue a license (the customer moved servers;
  the customer can reissue from the portal too, within a limit, so this grants nothing more
  dangerous). It cannot create, suspend or revoke licenses, nor see a full license key.
- security_event:read (the sign-in, MFA, permission-denied and rate-limit events of
  /admin/security): admin, and read_only through its every `:read` (an auditor's job). Not
  license_manager nor support: the events name staff accounts, their addresses and where they
  sign in from, and tell which guessed addresses were tried; watching the door is the
  administrators' (and auditors') business, not the licensing staff's. license_manager keeps
  `audit:read`, the log of what was done to licenses.
- read_only: every `:read`, for audits and dashboards. Secrets are never readable through a
  `:read`: showing a full license key is `license:reveal_key`, a webhook's signing secret
  `webhook:reveal_secret`; staff password hashes and TOTP secrets have no permission at all.
- signing keys (`signing_key:read|create|activate|retire`): adding, activating and retiring a
  key are admin only. Activating a key that modules in the field do not ship yet, or retiring
  one they still rely on, makes every such module treat the server as unreachable: a change
  with the reach of a settings change, not day-to-day licensing. license_manager and read_only
  may read the keys page (public keys only; which client versions still use an old key, which
  tells the license manager whose modules need an update); support has no need for it.
"""

from __future__ import annotations

from types import MappingProxyType

# Every permission that exists: resource -> actions.
_ACTIONS: dict[str, tuple[str, ...]] = {
    "license": ("read", "create", "update", "suspend", "revoke", "reissue", "reveal_key"),
    "product": ("read", "create", "update", "delete"),
    "binding": ("read", "update", "release"),
    "ban": ("read", "create", "delete"),
    "attempt": ("read", "export"),
    "staff": ("read", "create", "update", "delete", "reset_mfa"),
    "api_key": ("read", "create", "revoke"),
    "webhook": ("read", "create", "update", "delete", "reveal_secret"),
    "alert": ("read", "acknowledge"),
    "audit": ("read", "export"),
    "security_event": ("read",),
    "settings": ("read", "update"),
    "signing_key": ("read", "create", "activate", "retire"),
}
RESOURCES: tuple[str, ...] = tuple(_ACTIONS)
PERMISSIONS: frozenset[str] = frozenset(
    f"{r}:{a}" for r, actions in _ACTIONS.items() for a in actions
)

role_permissions: dict[str, list[str]] = {
    "admin": ["*"],
    "license_manager": [
        "license:*",
        "product:*",
        "binding:*",
        "ban:*",
        "attempt:read",
        "alert:read",
        "alert:acknowledge",
        "audit:read",
        "signing_key:read",
    ],
    "support": [
        "license:read",
        "license:reissue",
        "product:read",
        "binding:read",
        "binding:release",
        "ban:read",
        "attempt:read",
    ],
    "read_only": [f"{resource}:read" for resource in RESOURCES],
}
ROLES: tuple[str, ...] = tuple(role_permissions)


class PermissionDenied(Exception):
    """The role lacks the permission: HTTP 403 in the web layer (and a security event)."""

    def __init__(self, role: object, permission: str) -> None:
        super().__init__(f"role {role!r} lacks {permission}")
        self.role = role
        self.permission = permission


def _expand(grant: str) -> frozenset[str]:
    if grant == "*":
        return PERMISSIONS
    resource, _, action = grant.partition(":")
    if action == "*" and resource in _ACTIONS:
        return frozenset(f"{resource}:{a}" for a in _ACTIONS[resource])
    if grant in PERMISSIONS:
        return frozenset({grant})
    raise ValueError(f"grant {grant!r} names no permission in the catalogue")


_GRANTED: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        role: frozenset().union(*(_expand(grant) for grant in grants))
        for role, grants in role_permissions.items()
    }
)


def permissions_of(role: object) -> frozenset[str]:
    """Every permission `role` has (empty for an unknown role): for hiding what it cannot do."""
    return _GRANTED.get(role, frozenset()) if isinstance(role, str) else frozenset()


def has_permission(role: object, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return permission in permissions_of(role)


def require(role: object, permission: str) -> None:
    """Return if `role` has `permission`, else raise `PermissionDenied`."""
    if not has_permission(role, permission):
        raise PermissionDenied(role, permission)


def expand_grants(grants: object) -> frozenset[str]:
    """The permissions that grants written as `role_permissions` writes them (`*`,
    `resource:*`, `resource:action`) amount to; ValueError naming the first grant outside the
    catalogue. API keys' scopes are written this way (staff/api_keys.py)."""
    if not isinstance(grants, (list, tuple)) or not all(isinstance(g, str) for g in grants):
        raise ValueError("grants are a list of 'resource:action' strings")
    return frozenset().union(*(_expand(grant) for grant in grants))

"""Who makes a change: passed to the service's single write path with every change.

Today it names the channel (the CLI, a phoning-home module, the importer); staff accounts and
API credentials bring their id. RBAC, the audit log and webhook events read it from the one
place where changes are applied (`LicenseService._write`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActorKind(StrEnum):
    CLI = "cli"  # an operator at `run.py`
    MODULE = "module"  # a phone-home check (first use binds and activates)
    STAFF = "staff"  # a staff account in the admin pages (id: the account)
    API = "api"  # the vendor's billing system (id: the API credential)
    SYSTEM = "system"  # the server itself: jobs, imports run from code
    CUSTOMER = "customer"  # the licensee on the customer page /activate (id: the license)


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" if self.id else str(self.kind)


CLI = Actor(ActorKind.CLI)
MODULE = Actor(ActorKind.MODULE)
SYSTEM = Actor(ActorKind.SYSTEM)


def customer_actor(license_id: int) -> Actor:
    """The holder of a license's key on the customer page: named by the license it signed
    in with (a key is never written down, and it reaches that one license only)."""
    return Actor(ActorKind.CUSTOMER, str(license_id))


def api_actor(key_prefix: str) -> Actor:
    """An API key acting (the vendor API): named by its visible prefix, which the admin's
    API key page lists, so an audit row leads to the key that made the change."""
    return Actor(ActorKind.API, key_prefix)

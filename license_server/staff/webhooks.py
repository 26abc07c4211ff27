"""Webhook endpoints: register, change, delete, resume, redeliver; read the delivery log.

`WebhookEndpoints` is the service that the vendor API and the admin share; every change goes
through the license service's write path with the actor and an audit row (`webhook.*`).
`WebhookConsole` is what the admin calls: it checks the staff member's permission again
(DESIGN.md: route and service; ASVS 4.0.3 V4.1.1). A URL is checked against the SSRF rules
when it is saved (webhooks/targets.py) and again at every delivery.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from license_server.db import webhooks as webhook_rows
from license_server.licensing.actors import Actor
from license_server.licensing.service import LicenseService, NotFound
from license_server.licensing.specs import RequiredText
from license_server.licensing.webhook_events import EVENT_TYPES
from license_server.settings import WebhookSettings
from license_server.staff.accounts import SignedIn
from license_server.staff.console import require
from license_server.webhooks.targets import MAX_URL_LENGTH, check_url

PAGE_SIZE = 50


class EndpointSpec(BaseModel):
    """An endpoint as staff or an API key describe it; validated as every input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: RequiredText = Field(min_length=1, max_length=MAX_URL_LENGTH)
    description: str = Field("", max_length=200)
    events: tuple[str, ...] = Field(min_length=1, max_length=len(EVENT_TYPES))
    enabled: bool = True

    @field_validator("events")
    @classmethod
    def _events(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [value for value in values if value not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0][:60]!r}")
        if len(set(values)) != len(values):
            raise ValueError("an event type is listed twice")
        return tuple(sorted(values))

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be one line of printable text")
        return value.strip()


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    description: str
    events: tuple[str, ...]
    enabled: bool
    paused_ms: int | None
    paused_reason: str
    consecutive_failures: int
    created_by: str
    created_ms: int
    updated_ms: int

    @property
    def paused(self) -> bool:
        return self.paused_ms is not None


def endpoint_from_row(row: dict) -> Endpoint:
    return Endpoint(
        id=int(row["id"]), url=row["url"], description=row["description"],
        events=tuple(json.loads(row["events"])), enabled=bool(row["enabled"]),
        paused_ms=row["paused_ms"], paused_reason=row["paused_reason"],
        consecutive_failures=int(row["consecutive_failures"]), created_by=row["created_by"],
        created_ms=int(row["created_ms"]), updated_ms=int(row["updated_ms"]),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[dict]  # newest first, each with its "attempts_log"
    next_before: int | None  # the keyset for the next (older) page, None at the end


class WebhookEndpoints:
    def __init__(
        self,
        licenses: LicenseService,
        settings: WebhookSettings,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._licenses = licenses
        self._settings = settings
        self._wake = wake or (lambda: None)

    def now_ms(self) -> int:
        return int(self._licenses.clock() * 1000)

    def check(self, spec: EndpointSpec) -> None:
        """The SSRF rules (TargetRefused, a ValueError, names the problem)."""
        check_url(
            spec.url, allow_http=self._settings.allow_http,
            allow_private=self._settings.allow_private_targets,
        )  # fmt: skip

    async def create(self, actor: Actor, spec: EndpointSpec) -> Endpoint:
        self.check(spec)
        now_ms = self.now_ms()

        async def work(writes) -> int:
            endpoint_id = await webhook_rows.insert_endpoint(
                writes.conn, url=spec.url, description=spec.description,
                events=json.dumps(list(spec.events)), enabled=spec.enabled,
                created_by=str(actor), now_ms=now_ms,
            )  # fmt: skip
            await self._audit(writes, actor, "webhook.create", endpoint_id, _described(spec))
            return endpoint_id

        return await self.get(await self._licenses.write(actor, work))

    async def update(self, actor: Actor, endpoint_id: int, spec: EndpointSpec) -> Endpoint:
        self.check(spec)
        now_ms = self.now_ms()

        async def work(writes) -> None:
            row = await webhook_rows.endpoint_by_id(writes.conn, endpoint_id, lock=True)
            if row is None:
                raise NotFound(f"no webhook endpoint with id {endpoint_id}")
            before = endpoint_from_row(row)
            await webhook_rows.update_endpoint(
                writes.conn, endpoint_id, url=spec.url, description=spec.description,
                events=json.dumps(list(spec.events)), enabled=spec.enabled, now_ms=now_ms,
            )  # fmt: skip
            await self._audit(
                writes, actor, "webhook.update", endpoint_id,
                {"before": {"url": before.url, "description": before.description,
                            "events": list(before.events), "enabled": before.enabled},
                 "after": _described(spec)},
            )  # fmt: skip

        await self._licenses.write(actor, work)
        return await self.get(endpoint_id)

    async def delete(self, actor: Actor, endpoint_id: int) -> None:
        """The endpoint and its deliveries (their log too) are deleted."""

        async def work(writes) -> None:
            row = await webhook_rows.endpoint_by_id(writes.conn, endpoint_id, lock=True)
            if row is None or not await webhook_rows.delete_endpoint(writes.conn, endpoint_id):
                raise NotFound(f"no webhook endpoint with id {endpoint_id}")
            await self._audit(writes, actor, "webhook.delete", endpoint_id, {"url": row["url"]})

        await self._licenses.write(actor, work)

    async def resume(self, actor: Actor, endpoint_id: int) -> tuple[Endpoint, int]:
        """Unpause, reset the failure count and send again every delivery that failed or
        waited; the endpoint and how many deliveries are due."""
        now_ms = self.now_ms()

        async def work(writes) -> int:
            row = await webhook_rows.endpoint_by_id(writes.conn, endpoint_id, lock=True)
            if row is None:
                raise NotFound(f"no webhook endpoint with id {endpoint_id}")
            due = await webhook_rows.resume(writes.conn, endpoint_id, now_ms)
            await self._audit(writes, actor, "webhook.resume", endpoint_id,
                              {"was_paused": row["paused_ms"] is not None,
                               "redelivering": due})  # fmt: skip
            return due

        due = await self._licenses.write(actor, work)
        self._wake()
        return await self.get(endpoint_id), due

    async def redeliver(self, actor: Actor, endpoint_id: int, delivery_id: int) -> None:
        now_ms = self.now_ms()

        async def work(writes) -> None:
            if not await webhook_rows.redeliver(writes.conn, delivery_id, endpoint_id, now_ms):
                raise NotFound(f"endpoint {endpoint_id} has no delivery {delivery_id}")
            await self._audit(writes, actor, "webhook.redeliver", endpoint_id,
                              {"delivery_id": delivery_id})  # fmt: skip

        await self._licenses.write(actor, work)
        self._wake()

    async def get(self, endpoint_id: int) -> Endpoint:
        async with self._licenses.db.read() as conn:
            row = await webhook_rows.endpoint_by_id(conn, endpoint_id)
        if row is None:
            raise NotFound(f"no webhook endpoint with id {endpoint_id}")
        return endpoint_from_row(row)

    async def all(self) -> list[Endpoint]:
        async with self._licenses.db.read() as conn:
            return [endpoint_from_row(row) for row in await webhook_rows.all_endpoints(conn)]

    async def deliveries(
        self, endpoint_id: int, *, before: int | None = None, limit: int = PAGE_SIZE
    ) -> DeliveryPage:
        """A page of the endpoint's deliveries, newest first, each with its attempts."""
        async with self._licenses.db.read() as conn:
            if await webhook_rows.endpoint_by_id(conn, endpoint_id) is None:
                raise NotFound(f"no webhook endpoint with id {endpoint_id}")
            rows = await webhook_rows.deliveries_of(
                conn, endpoint_id, before_id=before, limit=limit + 1
            )
            more = len(rows) > limit
            rows = rows[:limit]
            attempts = await webhook_rows.attempts_of(conn, [row["id"] for row in rows])
        by_delivery: dict[int, list[dict]] = {}
        for attempt in attempts:
            by_delivery.setdefault(attempt["delivery_id"], []).append(attempt)
        deliveries = [{**row, "attempts_log": by_delivery.get(row["id"], [])} for row in rows]
        return DeliveryPage(deliveries, rows[-1]["id"] if more and rows else None)

    async def _audit(self, writes, actor: Actor, action: str, endpoint_id: int, detail) -> None:
        await self._licenses.audit.append(
            writes.conn, at=writes.now, actor=actor, action=action,
            target=f"webhook:{endpoint_id}", detail=detail,
        )  # fmt: skip


def _described(spec: EndpointSpec) -> dict:
    return {"url": spec.url, "description": spec.description, "events": list(spec.events),
            "enabled": spec.enabled}  # fmt: skip


class WebhookConsole:
    """The admin's webhook functions: each checks the staff member's permission again."""

    def __init__(self, endpoints: WebhookEndpoints) -> None:
        self._endpoints = endpoints

    async def all(self, staff: SignedIn) -> list[Endpoint]:
        require(staff, "webhook:read")
        return await self._endpoints.all()

    async def get(self, staff: SignedIn, endpoint_id: int) -> Endpoint:
        require(staff, "webhook:read")
        return await self._endpoints.get(endpoint_id)

    async def deliveries(
        self, staff: SignedIn, endpoint_id: int, before: int | None
    ) -> DeliveryPage:
        require(staff, "webhook:read")
        return await self._endpoints.deliveries(endpoint_id, before=before)

    async def create(self, staff: SignedIn, spec: EndpointSpec) -> Endpoint:
        require(staff, "webhook:create")
        return await self._endpoints.create(staff.actor, spec)

    async def update(self, staff: SignedIn, endpoint_id: int, spec: EndpointSpec) -> Endpoint:
        require(staff, "webhook:update")
        return await self._endpoints.update(staff.actor, endpoint_id, spec)

    async def delete(self, staff: SignedIn, endpoint_id: int) -> None:
        require(staff, "webhook:delete")
        await self._endpoints.delete(staff.actor, endpoint_id)

    async def resume(self, staff: SignedIn, endpoint_id: int) -> tuple[Endpoint, int]:
        require(staff, "webhook:update")
        return await self._endpoints.resume(staff.actor, endpoint_id)

    async def redeliver(self, staff: SignedIn, endpoint_id: int, delivery_id: int) -> None:
        require(staff, "webhook:update")
        await self._endpoints.redeliver(staff.actor, endpoint_id, delivery_id)

"""`/api/v1/webhooks`: register, read, change and delete endpoints; the delivery log; resume;
the public key that verifies the signatures (no credential needed: it is public)."""

from __future__ import annotations

from aiohttp import web

from license_server import appkeys
from license_server.licensing.service import NotFound
from license_server.staff.webhooks import EndpointSpec, WebhookEndpoints
from license_server.web.api.models import (
    DeliveryAttemptOut,
    DeliveryOut,
    DeliveryPageOut,
    DeliveryQuery,
    ResumeAnswer,
    WebhookList,
    WebhookOut,
    WebhookPublicKey,
    iso,
)
from license_server.web.api.problems import field_error, invalid, not_found
from license_server.web.api.registry import Call, json_answer
from license_server.webhooks.signing import TOLERANCE_SECONDS, public_key_text

MAX_ID = 2**63 - 1


def _endpoints(call: Call) -> WebhookEndpoints:
    return call.request.config_dict[appkeys.WEBHOOK_ENDPOINTS]


def _id(call: Call) -> int:
    value = int(call.request.match_info["id"])
    if not 0 < value <= MAX_ID:
        raise not_found("no such webhook endpoint")
    return value


def _refused_url(exc: ValueError):
    return invalid("body", [field_error("body", "url", str(exc))])


async def list_webhooks(call: Call) -> web.Response:
    endpoints = await _endpoints(call).all()
    return json_answer(WebhookList(items=[WebhookOut.of(e) for e in endpoints]))


async def create_webhook(call: Call) -> web.Response:
    spec: EndpointSpec = call.body
    try:
        endpoint = await _endpoints(call).create(call.key.actor, spec)
    except ValueError as exc:
        raise _refused_url(exc) from None
    return json_answer(
        WebhookOut.of(endpoint), 201, {"Location": f"/api/v1/webhooks/{endpoint.id}"}
    )


async def get_webhook(call: Call) -> web.Response:
    try:
        return json_answer(WebhookOut.of(await _endpoints(call).get(_id(call))))
    except NotFound as exc:
        raise not_found(str(exc)) from None


async def update_webhook(call: Call) -> web.Response:
    spec: EndpointSpec = call.body
    try:
        endpoint = await _endpoints(call).update(call.key.actor, _id(call), spec)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    except ValueError as exc:
        raise _refused_url(exc) from None
    return json_answer(WebhookOut.of(endpoint))


async def delete_webhook(call: Call) -> web.Response:
    try:
        await _endpoints(call).delete(call.key.actor, _id(call))
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return web.Response(status=204)


async def list_deliveries(call: Call) -> web.Response:
    query: DeliveryQuery = call.query
    try:
        page = await _endpoints(call).deliveries(_id(call), before=query.before,
                                                 limit=query.limit)  # fmt: skip
    except NotFound as exc:
        raise not_found(str(exc)) from None
    items = [
        DeliveryOut(
            id=d["id"], event_id=d["uid"], event_type=d["type"], state=d["state"],
            attempts=[DeliveryAttemptOut(at=iso(a["at_ms"] // 1000) or "", status=a["status"],
                                         error=a["error"], duration_ms=a["duration_ms"])
                      for a in d["attempts_log"]],
            next_attempt_at=iso(d["next_attempt_ms"] // 1000) if d["state"] == "pending"
            else None,
            created_at=iso(d["created_ms"] // 1000) or "",
            delivered_at=None if d["delivered_ms"] is None else iso(d["delivered_ms"] // 1000),
        )
        for d in page.deliveries
    ]  # fmt: skip
    return json_answer(DeliveryPageOut(items=items, next_before=page.next_before))


async def resume_webhook(call: Call) -> web.Response:
    try:
        endpoint, due = await _endpoints(call).resume(call.key.actor, _id(call))
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return json_answer(ResumeAnswer(webhook=WebhookOut.of(endpoint), redelivering=due))


async def public_key(call: Call) -> web.Response:
    key = call.request.config_dict[appkeys.WEBHOOK_KEY]
    return json_answer(
        WebhookPublicKey(public_key=public_key_text(key), algorithm="ed25519",
                         signature_version="v1a", tolerance_seconds=TOLERANCE_SECONDS),
        headers={"Cache-Control": "public, max-age=300"},
    )  # fmt: skip

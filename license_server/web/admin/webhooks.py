"""Webhooks (issue #14): the endpoints (list, create), one endpoint's page (edit, events,
the delivery log with the receiver's status and time, resume, redeliver, delete), and the
public key receivers verify signatures with.

Reading needs `webhook:read`; creating `webhook:create`; editing, resuming and redelivering
`webhook:update`; deleting `webhook:delete` (administrators only, staff/rbac.py: a webhook
sends data out of the server). The service (`staff/webhooks.py`) checks again, validates the
URL against the SSRF rules and writes the audit row with the change. Paused endpoints are
listed first, under a warning, with the reason and a Resume button.
"""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import ValidationError

from license_server import appkeys
from license_server.licensing.service import NotFound
from license_server.licensing.webhook_events import EVENT_TYPES
from license_server.staff.accounts import SignedIn
from license_server.staff.webhooks import EndpointSpec, WebhookConsole
from license_server.web.admin.base import form_problems, read_form, redirect, render, requires
from license_server.webhooks.signing import TOLERANCE_SECONDS, public_key_text

MAX_ID = 2**63 - 1


def _console(request: web.Request) -> WebhookConsole:
    return WebhookConsole(request.config_dict[appkeys.WEBHOOK_ENDPOINTS])


def ms_text(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _id(text: str) -> int | None:
    if not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        return None
    return int(text)


def _blank_form() -> dict:
    return {"url": "", "description": "", "events": (), "enabled": True}


async def _list_view(request, staff: SignedIn, status: int = 200, **extra):
    endpoints = await _console(request).all(staff)
    endpoints.sort(key=lambda e: (not e.paused, e.id))  # paused first
    extra.setdefault("form", _blank_form())
    return render(
        request, "admin/webhooks.html", status=status, title="Webhooks", endpoints=endpoints,
        paused=[e for e in endpoints if e.paused], event_types=EVENT_TYPES,
        public_key=public_key_text(request.config_dict[appkeys.WEBHOOK_KEY]),
        tolerance_minutes=TOLERANCE_SECONDS // 60, ms_text=ms_text, **extra,
    )  # fmt: skip


async def _read_endpoint_form(request: web.Request) -> tuple[dict, dict]:
    """The form's fields, and what to show again: one checkbox per event type, named
    `event.<type>` (distinct names: `read_form` refuses a field given twice)."""
    fields = await read_form(request)
    events = tuple(
        name.removeprefix("event.") for name, value in fields.items()
        if name.startswith("event.") and value == "on"
    )  # fmt: skip
    form = {
        "url": fields.get("url", "")[:2100],
        "description": fields.get("description", "")[:300],
        "events": events,
        "enabled": fields.get("enabled", "") == "on",
    }
    return fields, form


def _spec(form: dict) -> EndpointSpec:
    return EndpointSpec(
        url=form["url"].strip(), description=form["description"], events=form["events"],
        enabled=form["enabled"],
    )  # fmt: skip


@requires("webhook:read")
async def webhooks(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _list_view(request, staff)


@requires("webhook:create")
async def webhook_create(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    _, form = await _read_endpoint_form(request)
    form["enabled"] = True
    try:
        endpoint = await _console(request).create(staff, _spec(form))
    except ValidationError as exc:
        return await _list_view(request, staff, 400, errors=form_problems(exc), form=form)
    except ValueError as exc:  # TargetRefused: the SSRF rules
        return await _list_view(request, staff, 400, errors=[f"url: {exc}"], form=form)
    raise redirect(f"/admin/webhooks/{endpoint.id}")


async def _endpoint_view(request, staff: SignedIn, endpoint_id: int, status: int = 200, **extra):
    console = _console(request)
    before_text = request.query.get("before", "")
    before = _id(before_text) if before_text else None
    if before_text and before is None:
        extra.setdefault("errors", ["before: not a delivery id"])
        status = 400
    try:
        endpoint = await console.get(staff, endpoint_id)
        page = await console.deliveries(staff, endpoint_id, before)
    except NotFound:
        raise redirect("/admin/webhooks") from None
    extra.setdefault("form", {"url": endpoint.url, "description": endpoint.description,
                              "events": endpoint.events, "enabled": endpoint.enabled})  # fmt: skip
    return render(
        request, "admin/webhook.html", status=status, title=f"Webhook {endpoint.id}",
        endpoint=endpoint, page=page, event_types=EVENT_TYPES, ms_text=ms_text,
        next_link=f"/admin/webhooks/{endpoint.id}?before={page.next_before}"
        if page.next_before else "", **extra,
    )  # fmt: skip


@requires("webhook:read")
async def webhook_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    endpoint_id = _id(request.match_info["id"])
    if endpoint_id is None:
        raise redirect("/admin/webhooks")
    notice = ""
    resumed, redelivered = request.query.get("resumed", ""), request.query.get("redelivered", "")
    if resumed.isdigit() and len(resumed) <= 19:
        count = int(resumed)
        notice = f"Resumed: {count} deliver{'y' if count == 1 else 'ies'} will be sent again."
    elif _id(redelivered) is not None:
        notice = f"Delivery {int(redelivered)} will be sent again."
    return await _endpoint_view(request, staff, endpoint_id, notice=notice)


async def _missing(request, staff: SignedIn) -> web.Response:
    return await _list_view(request, staff, 400, errors=["There is no such webhook endpoint."])


@requires("webhook:update")
async def webhook_update(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    endpoint_id = _id(request.match_info["id"])
    _, form = await _read_endpoint_form(request)
    if endpoint_id is None:
        return await _missing(request, staff)
    try:
        await _console(request).update(staff, endpoint_id, _spec(form))
    except NotFound:
        return await _missing(request, staff)
    except ValidationError as exc:
        return await _endpoint_view(request, staff, endpoint_id, 400,
                                    errors=form_problems(exc), form=form)  # fmt: skip
    except ValueError as exc:
        return await _endpoint_view(request, staff, endpoint_id, 400, errors=[f"url: {exc}"],
                                    form=form)  # fmt: skip
    raise redirect(f"/admin/webhooks/{endpoint_id}")


@requires("webhook:update")
async def webhook_resume(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    endpoint_id = _id(request.match_info["id"])
    if endpoint_id is None:
        return await _missing(request, staff)
    try:
        _, due = await _console(request).resume(staff, endpoint_id)
    except NotFound:
        return await _missing(request, staff)
    # Post/redirect/get: reloading the page does not resume again.
    raise redirect(f"/admin/webhooks/{endpoint_id}?resumed={due}")


@requires("webhook:update")
async def webhook_redeliver(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    endpoint_id = _id(request.match_info["id"])
    delivery_id = _id(fields.get("delivery", ""))
    if endpoint_id is None:
        return await _missing(request, staff)
    if delivery_id is None:
        return await _list_view(request, staff, 400, errors=["Choose a delivery to send again."])
    try:
        await _console(request).redeliver(staff, endpoint_id, delivery_id)
    except NotFound:
        return await _list_view(request, staff, 400, errors=["There is no such delivery."])
    raise redirect(f"/admin/webhooks/{endpoint_id}?redelivered={delivery_id}")


@requires("webhook:delete")
async def webhook_delete(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    await read_form(request)
    endpoint_id = _id(request.match_info["id"])
    if endpoint_id is None:
        return await _missing(request, staff)
    try:
        await _console(request).delete(staff, endpoint_id)
    except NotFound:
        return await _missing(request, staff)
    raise redirect("/admin/webhooks")


_ACTIONS = {"resume": webhook_resume, "redeliver": webhook_redeliver, "delete": webhook_delete}


async def webhook_action(request: web.Request) -> web.StreamResponse:
    """One route for an endpoint's actions (as the license page's); each handler checks its
    own permission."""
    handler = _ACTIONS.get(request.match_info["action"])
    if handler is None:
        raise web.HTTPNotFound()
    return await handler(request)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/webhooks", webhooks, name="admin_webhooks")
    router.add_post("/webhooks", webhook_create, name="admin_webhook_create")
    router.add_get("/webhooks/{id}", webhook_page, name="admin_webhook")
    router.add_post("/webhooks/{id}", webhook_update, name="admin_webhook_update")
    router.add_post("/webhooks/{id}/{action}", webhook_action, name="admin_webhook_action")

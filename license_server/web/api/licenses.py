"""`/api/v1/licenses`: issue, read, list (filters, cursor pages) and the lifecycle actions.

Every change goes through the license service's single write path with the API key as the
actor, in one transaction with its change-log row, so the next verification anywhere sees it.

The list is keyset-paginated by id, newest id first: the cursor is an opaque encoding of the
last id of a page, and the next page is `id < last`, one index range whatever the offset
(`licenses_status_id`, `licenses_product_id`, `licenses_product_status_id`), and stable while
licenses are added: no license is shown twice or skipped because another was inserted.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web
from pydantic import ValidationError

from license_server.db import licenses as license_rows
from license_server.licensing.license_keys import KeyRejected
from license_server.licensing.lifecycle import Action, TransitionRefused, effective_status
from license_server.licensing.models import Status
from license_server.licensing.service import NotFound
from license_server.licensing.specs import LicenseSpec, LicenseTerms, end_of_day_utc
from license_server.web.api.models import (
    BindingList,
    BindingRelease,
    LicenseCreated,
    LicenseListQuery,
    LicenseOut,
    LicensePage,
    LicensePatch,
    LicenseSummary,
    RenewRequest,
    iso,
)  # fmt: skip
from license_server.web.api.problems import (
    bad_body,
    conflict,
    field_error,
    from_validation,
    invalid,
    not_found,
)  # fmt: skip
from license_server.web.api.registry import Call, json_answer

MAX_ID = 2**63 - 1
_CURSOR_PREFIX = b"lic1:"


def encode_cursor(last_id: int, prefix: bytes = _CURSOR_PREFIX) -> str:
    """An id-keyset list's opaque cursor; `prefix` names the list (the licenses', the bans',
    another list's own) so a cursor of one list is refused by another that uses its own."""
    return base64.urlsafe_b64encode(prefix + str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: bytes = _CURSOR_PREFIX) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    text = raw.removeprefix(prefix)
    if raw == text or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise invalid("query", [field_error("query", "cursor", "not a cursor of this list")])
    return int(text)


async def create_license(call: Call) -> web.Response:
    spec: LicenseSpec = call.body
    try:
        license, key = await call.service.issue(spec, actor=call.key.actor)
    except NotFound as exc:
        raise invalid("body", [field_error("body", "product", str(exc))]) from None
    except ValueError as exc:  # an expiry in the past
        field, _, message = str(exc).partition(": ")
        raise invalid("body", [field_error("body", field, message or field)]) from None
    body = LicenseCreated(**LicenseOut.fields_of(license, call.service.now()), license_key=key)
    return json_answer(body, 201, {"Location": f"/api/v1/licenses/{license.id}"})


async def get_license(call: Call) -> web.Response:
    license_id = _license_id(call)
    try:
        license = await call.service.license_by_id(license_id)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return json_answer(LicenseOut.of(license, call.service.now()))


async def list_licenses(call: Call) -> web.Response:
    query: LicenseListQuery = call.query
    service = call.service
    now = service.now()
    if query.key is not None:
        try:
            license = await service.license_by_key(query.key)
        except (NotFound, KeyRejected):
            return json_answer(LicensePage(items=[], next_cursor=None))
        matches = (query.status is None or license.status is query.status) and (
            query.product is None or license.product.code == query.product.lower()
        )
        items = [_summary_of_license(license, now)] if matches else []
        return json_answer(LicensePage(items=items, next_cursor=None))
    product_id = None
    if query.product is not None:
        try:
            product_id = (await service.product(query.product)).id
        except NotFound:
            return json_answer(LicensePage(items=[], next_cursor=None))
    before = None if query.cursor is None else decode_cursor(query.cursor)
    async with service.db.read() as conn:
        where = license_rows.LicenseFilter(
            status=None if query.status is None else query.status.value, product_id=product_id
        )
        rows = await license_rows.license_page(
            conn, before_id=before, limit=query.limit + 1, where=where
        )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return json_answer(
        LicensePage(
            items=[_summary_of_row(service, row, now) for row in rows],
            next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
        )
    )


def _summary_of_row(service, row: dict, now: int) -> LicenseSummary:
    return LicenseSummary(
        id=row["id"], product=row["product"],
        status=effective_status(Status(row["status"]), row["expires_at"], now),
        licensee=row["licensee_name"], email=service.open_email(row),
        expires_at=iso(row["expires_at"]),
        seats=row["seats"] if row["seats"] is not None else row["product_seats"],
    )  # fmt: skip


def _summary_of_license(license, now: int) -> LicenseSummary:
    return LicenseSummary(
        id=license.id, product=license.product.code,
        status=effective_status(license.status, license.expires_at, now),
        licensee=license.licensee_name, email=license.licensee_email,
        expires_at=iso(license.expires_at), seats=license.seats,
    )  # fmt: skip


def _license_id(call: Call) -> int:
    text = call.request.match_info["id"]
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise not_found(f"no license with id {text[:20]}")
    return int(text)


async def _apply(call: Call, action: Action, **options: object) -> web.Response:
    license_id = _license_id(call)
    try:
        license = await call.service.apply(license_id, action, actor=call.key.actor, **options)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    except TransitionRefused as exc:
        raise conflict(str(exc)) from None
    return json_answer(LicenseOut.of(license, call.service.now()))


async def suspend(call: Call) -> web.Response:
    return await _apply(call, Action.SUSPEND)


async def unsuspend(call: Call) -> web.Response:
    return await _apply(call, Action.UNSUSPEND)


async def revoke(call: Call) -> web.Response:
    return await _apply(call, Action.REVOKE)


async def reissue(call: Call) -> web.Response:
    return await _apply(call, Action.REISSUE)


async def renew(call: Call) -> web.Response:
    body: RenewRequest = call.body
    expiry = None if body.expires is None else end_of_day_utc(body.expires)
    return await _apply(call, Action.RENEW, new_expiry=expiry)


# -- terms, reissue count, bindings: the service methods the admin uses ----------------------


async def patch_license(call: Call) -> web.Response:
    """Change the fields sent, merged with the license as locked in the write transaction."""
    patch: LicensePatch = call.body
    sent = patch.model_dump(include=patch.model_fields_set)
    if not sent:
        raise bad_body("nothing to change: send at least one field")

    def merged(license) -> LicenseTerms:
        current = {
            "licensee": license.licensee_name, "company": license.licensee_company,
            "seats": license.seats, "notes": license.notes,
            "domains": license.rules_of("domain"), "ips": license.rules_of("ip"),
            "directories": license.rules_of("directory"),
        }  # fmt: skip
        return LicenseTerms(**{**current, **sent})

    license_id = _license_id(call)
    try:
        license = await call.service.edit_terms(license_id, merged, actor=call.key.actor)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    except ValidationError as exc:  # a rule the domain / IP / directory parsers refuse
        raise from_validation(exc, "body") from None
    return json_answer(LicenseOut.of(license, call.service.now()))


async def reset_reissues(call: Call) -> web.Response:
    try:
        license = await call.service.reset_reissues(_license_id(call), actor=call.key.actor)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return json_answer(LicenseOut.of(license, call.service.now()))


async def list_bindings(call: Call) -> web.Response:
    try:
        license = await call.service.license_by_id(_license_id(call))
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return json_answer(BindingList(items=LicenseOut.fields_of(license, 0)["bindings"]))


async def release_binding(call: Call) -> web.Response:
    """Free one binding; its seat is free for the next check. 404 if the license lacks it."""
    body: BindingRelease = call.body
    try:
        license = await call.service.release_binding(
            _license_id(call), body.kind, body.value, actor=call.key.actor
        )
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return json_answer(LicenseOut.of(license, call.service.now()))

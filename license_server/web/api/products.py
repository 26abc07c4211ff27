"""`/api/v1/products`: list, create, read and change products."""

from __future__ import annotations

from aiohttp import web

from license_server.licensing.service import Conflict, NotFound
from license_server.licensing.specs import ProductChanges, ProductSpec
from license_server.web.api.models import ProductList, ProductOut
from license_server.web.api.problems import bad_body, conflict, not_found
from license_server.web.api.registry import Call, json_answer


async def list_products(call: Call) -> web.Response:
    products = await call.service.products()
    return json_answer(ProductList(items=[ProductOut.of(p) for p in products]))


async def create_product(call: Call) -> web.Response:
    spec: ProductSpec = call.body
    try:
        product = await call.service.create_product(spec, actor=call.key.actor)
    except Conflict as exc:
        raise conflict(str(exc)) from None
    return json_answer(
        ProductOut.of(product), 201, {"Location": f"/api/v1/products/{product.code}"}
    )


async def get_product(call: Call) -> web.Response:
    return json_answer(ProductOut.of(await _product(call)))


async def update_product(call: Call) -> web.Response:
    changes: ProductChanges = call.body
    product = await _product(call)
    try:
        changed = await call.service.update_product(product.code, changes, actor=call.key.actor)
    except ValueError as exc:  # nothing to change
        raise bad_body(str(exc)) from None
    return json_answer(ProductOut.of(changed))


async def _product(call: Call):
    code = call.request.match_info["code"]
    if len(code) > 32:
        raise not_found("no such product")
    try:
        return await call.service.product(code)
    except NotFound as exc:
        raise not_found(str(exc)) from None

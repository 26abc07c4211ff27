"""Product pages: the list and the form that creates one."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from pydantic import ValidationError

from license_server.licensing.service import Conflict
from license_server.licensing.specs import ProductSpec
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.web.admin.base import (
    CONSOLE,
    form_problems,
    read_form,
    redirect,
    render,
    requires,
)  # fmt: skip


async def _products_view(request, staff: SignedIn, status: int = 200, **extra):
    extra["form"] = defaultdict(str, extra.get("form", {}))  # a fresh form: every field empty
    return render(
        request, "admin/products.html", status=status, title="Products",
        products=await request.config_dict[CONSOLE].products(staff),
        may_create=rbac.has_permission(staff.account.role, "product:create"), **extra,
    )  # fmt: skip


@requires("product:read")
async def products(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _products_view(request, staff)


@requires("product:create")
async def product_create(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    fields = await read_form(request)
    form = {name: fields.get(name, "")[:200] for name in
            ("code", "name", "seats", "local_key_days", "grace_days", "free_trial")}  # fmt: skip
    try:
        spec = ProductSpec(
            code=form["code"], name=form["name"], seats=form["seats"] or 1,
            local_key_days=form["local_key_days"] or 7, grace_days=form["grace_days"] or 14,
            free_trial=form["free_trial"] == "on",
        )  # fmt: skip
        await request.config_dict[CONSOLE].create_product(staff, spec)
    except ValidationError as exc:
        return await _products_view(request, staff, 400, errors=form_problems(exc), form=form)
    except Conflict as exc:
        return await _products_view(request, staff, 409, errors=[str(exc)], form=form)
    raise redirect("/admin/products")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/products", products, name="admin_products")
    router.add_post("/products", product_create, name="admin_product_create")

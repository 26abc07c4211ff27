"""Product pages: the list, the form that creates one, and one product's page that edits it.

Both forms offer what `run.py create-product` / `update-product` offer, and the values are
checked by the same pydantic models the CLI uses (ProductSpec, ProductChanges: ASVS 4.0.3
V5.1.3); an edit goes through LicenseService.update_product, the one write path, audited with
before/after values (the audit row says "set", never the secret). The WHMCS secret is
write-only, never rendered into a page, not even when a form comes back with an error: the
edit form keeps it, sets a new one, or clears it.
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from pydantic import ValidationError

from license_server.licensing.models import Product
from license_server.licensing.service import Conflict, NotFound
from license_server.licensing.specs import ProductChanges, ProductSpec
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.web.admin.base import (
    CONSOLE,
    EDITING,
    form_problems,
    read_form,
    redirect,
    render,
    requires,
)  # fmt: skip

_FLAGS = ("free_trial", "allow_domain_conflict", "allow_ip_conflict", "allow_directory_conflict")
_TEXTS = ("code", "name", "key_prefix", "seats", "local_key_days", "grace_days",
          "dev_host_allowance", "features", "max_reissues", "whmcs_secret",
          "whmcs_action", "reissue_cooldown_hours")  # fmt: skip
_SECRET_ACTIONS = ("keep", "set", "clear")
# The edit form's fields that are always posted (checkboxes are not when unticked).
_EDITED = ("name", "seats", "local_key_days", "grace_days", "dev_host_allowance", "features",
           "max_reissues", "reissue_cooldown_hours")  # fmt: skip


class _Refused(ValueError):
    """A form value that no model can name (which secret action): one line for the page."""


def _form(fields: dict[str, str]) -> dict[str, str]:
    """The posted values, as the page shows them again; a missing checkbox is unchecked."""
    form = {name: fields.get(name, "") for name in _TEXTS}
    form.update({name: fields.get(name, "off") for name in _FLAGS})
    return form


def _shown(form: dict[str, str]) -> dict[str, str]:
    """The form to show again: a secret typed into it is not echoed back into the page."""
    return {name: value for name, value in form.items() if name != "whmcs_secret"}


def _features(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _options(form: dict[str, str]) -> dict[str, object]:
    """What both forms share, for pydantic to check (strings; it converts and names errors)."""
    options: dict[str, object] = {name: form[name] for name in _FLAGS}
    options["features"] = _features(form["features"])
    if form["max_reissues"].strip():
        options["max_reissues"] = form["max_reissues"].strip()
    options["reissue_cooldown_hours"] = form["reissue_cooldown_hours"].strip() or "0"
    return options


def _spec(form: dict[str, str]) -> ProductSpec:
    defaults = {"seats": 1, "local_key_days": 7, "grace_days": 14, "dev_host_allowance": 3}
    numbers = {name: form[name].strip() or default for name, default in defaults.items()}
    return ProductSpec(
        code=form["code"], name=form["name"], key_prefix=form["key_prefix"].strip() or None,
        whmcs_secret=form["whmcs_secret"] or None, **numbers, **_options(form),
    )  # fmt: skip


def _changes(form: dict[str, str]) -> ProductChanges:
    action = form["whmcs_action"] or "keep"
    if action not in _SECRET_ACTIONS:
        raise _Refused("whmcs_secret: choose keep, set a new secret, or clear")
    if action != "set" and form["whmcs_secret"]:
        raise _Refused("whmcs_secret: choose 'Set a new secret' to use the one you typed")
    if action == "set" and not form["whmcs_secret"]:
        raise _Refused("whmcs_secret: type the new secret")
    options = _options(form)
    return ProductChanges(
        name=form["name"], seats=form["seats"].strip(),
        local_key_days=form["local_key_days"].strip(), grace_days=form["grace_days"].strip(),
        dev_host_allowance=form["dev_host_allowance"].strip(),
        whmcs_secret=form["whmcs_secret"] if action == "set" else None,
        clear_whmcs_secret=action == "clear",
        unlimited_reissues="max_reissues" not in options, **options,
    )  # fmt: skip


async def _products_view(request, staff: SignedIn, status: int = 200, **extra):
    # A fresh form shows the CLI's defaults.
    fresh = {"seats": "1", "local_key_days": "7", "grace_days": "14", "dev_host_allowance": "3"}
    extra["form"] = defaultdict(str, extra.get("form", fresh))
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
    form = _form(await read_form(request))
    shown = _shown(form)
    try:
        spec = _spec(form)
        await request.config_dict[CONSOLE].create_product(staff, spec)
    except ValidationError as exc:
        return await _products_view(request, staff, 400, errors=form_problems(exc), form=shown)
    except Conflict as exc:
        return await _products_view(request, staff, 409, errors=[str(exc)], form=shown)
    raise redirect("/admin/products")


def _code(request: web.Request) -> str:
    return request.match_info["code"]


def _form_of(product: Product) -> dict[str, str]:
    """The edit form filled in with the product's settings (never its secret)."""
    form = {
        "name": product.name, "seats": str(product.seats),
        "local_key_days": str(product.local_key_days), "grace_days": str(product.grace_days),
        "dev_host_allowance": str(product.dev_host_allowance),
        "features": "\n".join(product.features),
        "max_reissues": "" if product.max_reissues is None else str(product.max_reissues),
        "reissue_cooldown_hours": str(product.reissue_cooldown_hours),
    }  # fmt: skip
    form.update({name: "on" if getattr(product, name) else "off" for name in _FLAGS})
    return form


async def _product_view(
    request, staff: SignedIn, code: str, *, status: int = 200, form=None, **extra
):
    try:
        product = await request.config_dict[EDITING].product(staff, code)
    except NotFound:
        raise web.HTTPNotFound from None
    return render(
        request, "admin/product.html", status=status, title=f"Product {product.code}",
        product=product, form=defaultdict(str, form or _form_of(product)), **extra,
    )  # fmt: skip


@requires("product:read")
async def product_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    notice = "Saved. The next check of every license of this product sees the change."
    return await _product_view(
        request, staff, _code(request), notice=notice if "saved" in request.query else ""
    )


@requires("product:update")
async def product_update(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    code = _code(request)
    fields = await read_form(request)
    form = _form(fields)
    shown = _shown(form)
    try:
        missing = [name for name in _EDITED if name not in fields]
        if missing:  # never read as "clear it": a form without a field is not the page's form
            raise _Refused(f"form: incomplete (no {', '.join(missing)}); reload the page")
        changes = _changes(form)
        product = await request.config_dict[EDITING].update_product(staff, code, changes)
    except NotFound:
        raise web.HTTPNotFound from None
    except ValidationError as exc:
        return await _product_view(request, staff, code, status=400,
                                   errors=form_problems(exc), form=shown)  # fmt: skip
    except _Refused as exc:
        return await _product_view(request, staff, code, status=400, errors=[str(exc)],
                                   form=shown)  # fmt: skip
    raise redirect(f"/admin/products/{product.code}?saved=1")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/products", products, name="admin_products")
    router.add_post("/products", product_create, name="admin_product_create")
    code = "{code:[A-Za-z0-9][A-Za-z0-9_.-]{0,31}}"
    router.add_get(f"/products/{code}", product_page, name="admin_product")
    router.add_post(f"/products/{code}", product_update, name="admin_product_update")

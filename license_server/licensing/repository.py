"""Turns database rows into licensing models (the one place that knows both shapes)."""

from __future__ import annotations

import json

from license_server.licensing.models import Binding, KeyKind, License, Product, Rule, Status


def product_from_row(row: dict) -> Product:
    return Product(
        id=row["id"],
        code=row["code"],
        name=row["name"],
        key_prefix=row["key_prefix"],
        local_key_days=row["local_key_days"],
        grace_days=row["grace_days"],
        seats=row["seats"],
        dev_host_allowance=row["dev_host_allowance"],
        features=tuple(json.loads(row["features"])),
        has_whmcs_secret=row["whmcs_secret"] is not None,
        allow_domain_conflict=bool(row["allow_domain_conflict"]),
        allow_ip_conflict=bool(row["allow_ip_conflict"]),
        allow_directory_conflict=bool(row["allow_directory_conflict"]),
        free_trial=bool(row["free_trial"]),
        max_reissues=row["max_reissues"],
        reissue_cooldown_hours=row["reissue_cooldown_hours"],
    )


def license_from_rows(
    row: dict, product: Product, rules: list[dict], bindings: list[dict]
) -> License:
    return License(
        id=row["id"],
        product=product,
        key_kind=KeyKind(row["key_kind"]),
        status=Status(row["status"]),
        licensee_name=row["licensee_name"],
        licensee_company=row["licensee_company"],
        licensee_email=row["licensee_email"],
        expires_at=row["expires_at"],
        seats=row["seats"] if row["seats"] is not None else product.seats,
        reissue_count=row["reissue_count"],
        notes=row["notes"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        rules=tuple(Rule(r["kind"], r["value"]) for r in rules),
        bindings=tuple(
            Binding(
                b["kind"],
                b["value"],
                b["raw_value"],
                bool(b["is_dev"]),
                b["created_at"],
                b["last_seen_at"],
            )
            for b in bindings
        ),
        whmcs_service_id=row["whmcs_service_id"],
        billing_cycle=row["billing_cycle"],
        last_access_at=row["last_access_at"],
        last_reissued_at=row["last_reissued_at"],
    )

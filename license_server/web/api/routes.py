"""The vendor API's operations: the one list that the router (`add_routes`) and the OpenAPI
document (`openapi.py`) are both built from."""

from __future__ import annotations

from aiohttp import web

from license_server.licensing.specs import LicenseSpec, ProductChanges, ProductSpec
from license_server.staff.webhooks import EndpointSpec
from license_server.web.api import alerts, attempts, bans, licenses, products, tokens, webhooks
from license_server.web.api.models import (
    AlertOut,
    AlertPage,
    AlertQuery,
    AttemptPage,
    AttemptQuery,
    BanIn,
    BanOut,
    BanPage,
    BindingList,
    BindingRelease,
    DeliveryPageOut,
    DeliveryQuery,
    LicenseCreated,
    LicenseListQuery,
    LicenseOut,
    LicensePage,
    LicensePatch,
    NoBody,
    PageQuery,
    ProductList,
    ProductOut,
    RenewRequest,
    ResumeAnswer,
    TokenAnswer,
    TokenRequest,
    WebhookList,
    WebhookOut,
    WebhookPublicKey,
)  # fmt: skip  # fmt: skip
from license_server.web.api.registry import Operation, dispatch

_CODE = {"type": "string", "minLength": 1, "maxLength": 32, "description": "Product code."}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1, "description": "License id."}
_BAN_ID = {**_ID, "description": "Ban id."}
_HOOK_ID = {**_ID, "description": "Webhook endpoint id."}
_ALERT_ID = {**_ID, "description": "Alert id."}

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/products", "listProducts", "List the products",
              products.list_products, "product:read", {200: ProductList}, tag="products"),
    Operation("POST", "/v1/products", "createProduct", "Create a product",
              products.create_product, "product:create", {201: ProductOut}, body=ProductSpec,
              problems=(409,), tag="products"),
    Operation("GET", "/v1/products/{code}", "getProduct", "Read a product",
              products.get_product, "product:read", {200: ProductOut},
              path_params={"code": _CODE}, problems=(404,), tag="products"),
    Operation("PATCH", "/v1/products/{code}", "updateProduct",
              "Change a product (fields left out or null stay as they are)",
              products.update_product, "product:update", {200: ProductOut},
              body=ProductChanges, path_params={"code": _CODE}, problems=(404,),
              tag="products"),
    Operation("POST", "/v1/licenses", "createLicense",
              "Issue a license (the answer carries its key, this once)",
              licenses.create_license, "license:create", {201: LicenseCreated},
              body=LicenseSpec, tag="licenses"),
    Operation("GET", "/v1/licenses", "listLicenses",
              "List licenses, newest id first, or find the license of a key",
              licenses.list_licenses, "license:read", {200: LicensePage},
              query=LicenseListQuery, tag="licenses"),
    Operation("GET", "/v1/licenses/{id}", "getLicense", "Read a license",
              licenses.get_license, "license:read", {200: LicenseOut},
              path_params={"id": _ID}, problems=(404,), tag="licenses"),
    *(
        Operation("POST", f"/v1/licenses/{{id}}/{name}", f"{name}License", summary,
                  handler, scope, {200: LicenseOut}, body=NoBody, body_required=False,
                  path_params={"id": _ID}, problems=(404, 409), tag="licenses")
        for name, summary, handler, scope in (
            ("suspend", "Suspend a license (its checks answer suspended)",
             licenses.suspend, "license:suspend"),
            ("unsuspend", "Lift a suspension", licenses.unsuspend, "license:suspend"),
            ("revoke", "Revoke a license for good", licenses.revoke, "license:revoke"),
            ("reissue", "Free a license's bindings: its next check binds again",
             licenses.reissue, "license:reissue"),
        )
    ),
    Operation("POST", "/v1/licenses/{id}/renew", "renewLicense",
              "Set a new expiry date (or none)", licenses.renew, "license:update",
              {200: LicenseOut}, body=RenewRequest, path_params={"id": _ID},
              problems=(404, 409), tag="licenses"),
    Operation("PATCH", "/v1/licenses/{id}", "updateLicense",
              "Change a license's licensee, company, notes, seats and rules (fields left out "
              "stay as they are)", licenses.patch_license, "license:update", {200: LicenseOut},
              body=LicensePatch, path_params={"id": _ID}, problems=(404,), tag="licenses"),
    Operation("POST", "/v1/licenses/{id}/reset-reissues", "resetReissues",
              "Set the reissue count back to 0", licenses.reset_reissues, "license:reissue",
              {200: LicenseOut}, body=NoBody, body_required=False, path_params={"id": _ID},
              problems=(404,), tag="licenses"),
    Operation("GET", "/v1/licenses/{id}/bindings", "listBindings",
              "The domains, IPs and directories a license is bound to",
              licenses.list_bindings, "binding:read", {200: BindingList},
              path_params={"id": _ID}, problems=(404,), tag="licenses"),
    Operation("POST", "/v1/licenses/{id}/bindings/release", "releaseBinding",
              "Free one binding: its seat is free for the next check",
              licenses.release_binding, "binding:release", {200: LicenseOut},
              body=BindingRelease, path_params={"id": _ID}, problems=(404,), tag="licenses"),
    Operation("GET", "/v1/attempts", "listAttempts",
              "The verification attempt log, newest first, filtered",
              attempts.list_attempts, "attempt:read", {200: AttemptPage}, query=AttemptQuery,
              tag="attempts"),
    Operation("GET", "/v1/bans", "listBans", "Banned domains and IPs, newest first",
              bans.list_bans, "ban:read", {200: BanPage}, query=PageQuery, tag="bans"),
    Operation("POST", "/v1/bans", "createBan",
              "Ban a domain or an IP / range: its checks answer suspended", bans.add_ban,
              "ban:create", {201: BanOut}, body=BanIn, tag="bans"),
    Operation("DELETE", "/v1/bans/{id}", "deleteBan", "Lift a ban", bans.lift_ban,
              "ban:delete", {204: None}, path_params={"id": _BAN_ID}, problems=(404,),
              tag="bans"),
    Operation("POST", "/v1/tokens", "createToken",
              "An access token (15 min) and a refresh token (7 days) for an API key or a "
              "refresh token", tokens.issue_tokens, "api_key:read", {200: TokenAnswer},
              body=TokenRequest, tag="tokens", public=True, idempotent=False,
              description="`grant_type` `api_key`: send the API key as the bearer credential. "
              "`grant_type` `refresh_token`: send the refresh token in the body, no "
              "Authorization. Each refresh token works once; presenting a used one again "
              "revokes its whole family (every refresh and access token descended from the "
              "same API-key exchange). Access tokens are EdDSA JWTs; their keys are at "
              "`/api/v1/tokens/jwks.json`. No Idempotency-Key: the answer holds secrets that "
              "are never stored."),
    # -- webhooks (issue #14) --
    Operation("GET", "/v1/webhooks", "listWebhooks", "List the webhook endpoints",
              webhooks.list_webhooks, "webhook:read", {200: WebhookList}, tag="webhooks"),
    Operation("POST", "/v1/webhooks", "createWebhook",
              "Register a webhook endpoint (https; public addresses only unless allowed)",
              webhooks.create_webhook, "webhook:create", {201: WebhookOut}, body=EndpointSpec,
              tag="webhooks"),
    Operation("GET", "/v1/webhooks/public-key", "getWebhookPublicKey",
              "The Ed25519 public key that verifies webhook signatures (Standard Webhooks v1a)",
              webhooks.public_key, "webhook:read", {200: WebhookPublicKey}, tag="webhooks",
              public=True),
    Operation("GET", "/v1/webhooks/{id}", "getWebhook", "Read a webhook endpoint",
              webhooks.get_webhook, "webhook:read", {200: WebhookOut},
              path_params={"id": _HOOK_ID}, problems=(404,), tag="webhooks"),
    Operation("PUT", "/v1/webhooks/{id}", "updateWebhook", "Replace a webhook endpoint's settings",
              webhooks.update_webhook, "webhook:update", {200: WebhookOut}, body=EndpointSpec,
              path_params={"id": _HOOK_ID}, problems=(404,), tag="webhooks"),
    Operation("DELETE", "/v1/webhooks/{id}", "deleteWebhook",
              "Delete a webhook endpoint and its delivery log", webhooks.delete_webhook,
              "webhook:delete", {204: None}, path_params={"id": _HOOK_ID}, problems=(404,),
              tag="webhooks"),
    Operation("GET", "/v1/webhooks/{id}/deliveries", "listWebhookDeliveries",
              "An endpoint's deliveries, newest first, with every attempt's status and time",
              webhooks.list_deliveries, "webhook:read", {200: DeliveryPageOut},
              query=DeliveryQuery, path_params={"id": _HOOK_ID}, problems=(404,),
              tag="webhooks"),
    Operation("POST", "/v1/webhooks/{id}/resume", "resumeWebhook",
              "Unpause an endpoint, reset its failure count and send its failed and waiting "
              "deliveries again", webhooks.resume_webhook, "webhook:update", {200: ResumeAnswer},
              body=NoBody, body_required=False, path_params={"id": _HOOK_ID}, problems=(404,),
              tag="webhooks"),
    Operation("GET", "/v1/alerts", "listAlerts",
              "Alerts (shared keys, key guessing, ...), newest first; unresolved by default",
              alerts.list_alerts, "alert:read", {200: AlertPage}, query=AlertQuery,
              tag="alerts"),
    Operation("GET", "/v1/alerts/{id}", "getAlert", "Read an alert with its evidence",
              alerts.get_alert, "alert:read", {200: AlertOut}, path_params={"id": _ALERT_ID},
              problems=(404,), tag="alerts"),
    Operation("POST", "/v1/alerts/{id}/acknowledge", "acknowledgeAlert",
              "Acknowledge an open alert (someone is on it)", alerts.acknowledge,
              "alert:acknowledge", {200: AlertOut}, body=NoBody, body_required=False,
              path_params={"id": _ALERT_ID}, problems=(404, 409), tag="alerts"),
    Operation("POST", "/v1/alerts/{id}/resolve", "resolveAlert",
              "Resolve an open or acknowledged alert (a new firing opens a new one)",
              alerts.resolve, "alert:acknowledge", {200: AlertOut}, body=NoBody,
              body_required=False, path_params={"id": _ALERT_ID}, problems=(404, 409),
              tag="alerts"),
)  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    for operation in OPERATIONS:
        path = operation.path
        for name, schema in operation.path_params.items():
            if schema.get("type") == "integer":  # digits only; the handler checks the range
                path = path.replace(f"{{{name}}}", f"{{{name}:[0-9]{{1,19}}}}")
        router.add_route(operation.method, path, dispatch(operation), name=operation.name)

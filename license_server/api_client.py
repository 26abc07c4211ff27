"""A typed async client for the vendor API (`/api/v1`, issue #13), for the vendor's own Python
systems and for this project's tests.

One definition of every request and answer: the client sends and parses the server's own
pydantic models (`web/api/models.py`, `licensing/specs.py`), so a field added to the API is a
field of the client the same day, and a request the server would refuse for its shape is
refused here first, before anything is sent.

What every call shares lives in `VendorApi._call`; an operation is a method of a few lines that
names its method, path, body model and answer model (see the "operations" section below).

Behaviour a caller can rely on:
- Every refusal raises `ApiProblem`, carrying the RFC 9457 fields (`type`, `title`, `status`,
  `detail`) and `errors` (each bad field: location, name, JSON pointer, message). An answer
  that is not a problem document (a proxy's HTML error page) is still an `ApiProblem`, with
  the status and a short note; its body is never echoed.
- Every POST carries an `Idempotency-Key`: the caller's (derive it from your own order or
  service id) or a random UUID, the same one on each of the client's own retries, so a retried
  create never makes two licenses (IETF httpapi idempotency-key draft).
- Retries, bounded by `retries`: a 429 (and a 409 "request in progress" of its own earlier try)
  waits what `Retry-After` says, up to `max_wait` seconds (longer: raised at once, not slept);
  a connection error or timeout is retried with exponential back-off only on an idempotent
  call: a GET, a DELETE, or a POST (it always has an Idempotency-Key). A PATCH is never
  re-sent after a connection error: the first may have been applied. Nor is a refresh-token
  grant (it may have been spent: see token mode).
- Lists page through `next_cursor` with async iterators (`licenses()`, `attempts()`, `bans()`).
- Token mode (`use_tokens=True`, staff/api_tokens.py has the server's side): the API key is
  presented only to `POST /api/v1/tokens`, once per token family; every other call carries
  the 15-minute access token it bought. The client refreshes it `refresh_margin` seconds
  before it expires by its own clock, and once more on a 401 whose WWW-Authenticate says
  `invalid_token` (expired, or its family revoked), then sends the call again, once.
  Renewals run under a lock, so concurrent calls that found the token stale share one
  refresh; a refresh token is taken out of the client before it is sent, so it is never sent
  twice (a reuse would revoke the family, RFC 9700 §4.14). A refresh refused or lost on the
  way falls back to exchanging the API key, once; that failing is raised.
- Timeouts: `timeout` seconds per attempt (connect, send, read the whole answer).
- The credential (API key, access and refresh tokens) is sent in the Authorization header or
  the token request's body only (RFC 6750) and never logged, shown in `repr()` or put into an
  exception (ASVS 4.0.3 V7.1.1: no credentials in logs; V9.1.1: a
  plain-http base URL is refused unless it is the loopback, where no network sees it).

No synchronous wrapper: a correct one needs an event loop and a session per thread; a
synchronous caller runs `asyncio.run(...)` around an `async with VendorApi(...)` block.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from enum import Enum
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ValidationError

from license_server.licensing.models import Status
from license_server.licensing.specs import LicenseSpec, ProductChanges, ProductSpec
from license_server.staff.webhooks import EndpointSpec
from license_server.web.api.models import (
    AlertOut,
    AlertPage,
    AttemptOut,
    AttemptPage,
    BanIn,
    BanOut,
    BanPage,
    BindingList,
    BindingOut,
    BindingRelease,
    DeliveryPageOut,
    FieldProblem,
    LicenseCreated,
    LicenseOut,
    LicensePage,
    LicensePatch,
    LicenseSummary,
    Problem,
    ProductList,
    ProductOut,
    RenewRequest,
    ResumeAnswer,
    TokenAnswer,
    TokenRequest,
    WebhookList,
    WebhookOut,
    WebhookPublicKey,
)  # fmt: skip

__all__ = [
    "AlertOut",
    "AlertPage",
    "ApiProblem",
    "AttemptOut",
    "AttemptPage",
    "BanOut",
    "BanPage",
    "BindingOut",
    "FieldProblem",
    "LicenseCreated",
    "LicenseOut",
    "LicensePage",
    "LicensePatch",
    "LicenseSpec",
    "LicenseSummary",
    "ProductChanges",
    "ProductOut",
    "ProductSpec",
    "RenewRequest",
    "TokenAnswer",
    "VendorApi",
]

log = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Methods that may be sent again after a connection error: safe ones, DELETE (idempotent:
# lifting a ban twice leaves it lifted), and POST because this client sends every POST with an
# Idempotency-Key (the server answers a repeat with the first answer and does nothing again).
# The token endpoint keeps no Idempotency-Key record: its refresh grant is never re-sent.
RETRY_AFTER_CONNECTION_ERROR = frozenset({"GET", "HEAD", "OPTIONS", "POST", "DELETE"})
TOKENS_PATH = "/api/v1/tokens"
# Where a call's credential comes from: the API key itself, the access token of token mode
# (the API key when token mode is off), or none (the refresh grant carries its own in the body).
Auth = Literal["key", "access", "none"]
_PROBLEM_TYPES = ("application/problem+json", "application/json")


class ApiProblem(Exception):
    """A refusal of the vendor API: an RFC 9457 problem document (or a stand-in for an answer
    that was not one). `errors` names each bad field of a 400."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        errors: list[FieldProblem] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors or []
        self.retry_after = retry_after

    @property
    def slug(self) -> str:
        """The last part of `type` (`rate-limited`, `not-found`, `idempotency-key-reused` ...)."""
        return self.type.rsplit("/", 1)[-1]

    def fields(self) -> set[str]:
        """The names of the fields `errors` refuses."""
        return {error.field for error in self.errors}

    @classmethod
    def of(cls, status: int, body: bytes, retry_after: float | None) -> ApiProblem:
        try:
            problem = Problem.model_validate_json(body)
        except ValidationError:
            return cls(
                status, "Unexpected answer", f"HTTP {status} without a problem document",
                retry_after=retry_after,
            )  # fmt: skip
        return cls(
            problem.status, problem.title, problem.detail, type=problem.type,
            errors=problem.errors, retry_after=retry_after,
        )  # fmt: skip


class VendorApi:
    """The vendor API at `base_url`, as the holder of `api_key`. Use `async with`, or call
    `close()`; pass `session` to share an aiohttp session (it is then left open).

    `use_tokens=True`: the API key is presented only to `POST /api/v1/tokens`, once per token
    family; every other call carries the short-lived access token it buys (see `_access`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        max_wait: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        use_tokens: bool = False,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = _checked_base_url(base_url)
        if not api_key or any(c in api_key for c in "\r\n "):
            raise ValueError("api_key: one token, as the admin or create-api-key showed it")
        self.__api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._max_wait = max_wait
        self._session = session
        self._own_session = session is None
        self._sleep = sleep
        self._use_tokens = use_tokens
        self._refresh_margin = refresh_margin
        self._clock = clock
        # Token mode's state: the current access token, when this client stops using it (its
        # own clock, `refresh_margin` before the server's expiry), and the one refresh token
        # not yet spent. Name-mangled like the key: never in repr, logs or exceptions.
        self.__access: str | None = None
        self.__refresh: str | None = None
        self._access_until = 0.0
        self._renewing = asyncio.Lock()

    def _credential(self, auth: Auth, access: str | None) -> dict[str, str]:
        # Added at the last moment: no argument or log line of this module holds it.
        if auth == "none":
            return {}
        secret = access if auth == "access" and access is not None else self.__api_key
        return {"Authorization": f"Bearer {secret}"}

    def __repr__(self) -> str:
        tokens = ", use_tokens=True" if self._use_tokens else ""
        return f"VendorApi({self._base!r}, api_key='***'{tokens})"

    async def __aenter__(self) -> VendorApi:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- operations: one short method each -------------------------------------------------

    async def products(self) -> list[ProductOut]:
        return (await self._call("GET", "/api/v1/products", ProductList)).items

    async def product(self, code: str) -> ProductOut:
        return await self._call("GET", f"/api/v1/products/{_segment(code)}", ProductOut)

    async def create_product(
        self, spec: ProductSpec, *, idempotency_key: str | None = None
    ) -> ProductOut:
        return await self._call("POST", "/api/v1/products", ProductOut, spec, idempotency_key)

    async def update_product(self, code: str, changes: ProductChanges) -> ProductOut:
        return await self._call("PATCH", f"/api/v1/products/{_segment(code)}", ProductOut, changes)

    async def create_license(
        self, spec: LicenseSpec, *, idempotency_key: str | None = None
    ) -> LicenseCreated:
        """Issue a license; the answer's `license_key` is shown this once: store it."""
        return await self._call("POST", "/api/v1/licenses", LicenseCreated, spec, idempotency_key)

    async def license(self, license_id: int) -> LicenseOut:
        return await self._call("GET", f"/api/v1/licenses/{int(license_id)}", LicenseOut)

    async def license_of_key(self, license_key: str) -> LicenseSummary | None:
        """The license of a key, or None for a key the server does not know."""
        page = await self.license_page(key=license_key)
        return page.items[0] if page.items else None

    async def license_page(
        self,
        *,
        status: Status | str | None = None,
        product: str | None = None,
        key: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> LicensePage:
        """One page of licenses, newest id first; `next_cursor` continues it."""
        query = {"status": status, "product": product, "key": key, "cursor": cursor,
                 "limit": limit}  # fmt: skip
        return await self._call("GET", "/api/v1/licenses", LicensePage, query=query)

    def licenses(
        self,
        *,
        status: Status | str | None = None,
        product: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[LicenseSummary]:
        """Every license matching the filters, page after page (keyset pages: none is shown
        twice or skipped while others are being issued)."""
        return self._walk(
            lambda cursor: self.license_page(
                status=status, product=product, cursor=cursor, limit=page_size
            )
        )

    async def update_license(self, license_id: int, changes: LicensePatch) -> LicenseOut:
        """Change licensee, company, notes, seats, rules: only the fields set in `changes` are
        sent (`seats=None` set explicitly: follow the product's seats). Never re-sent."""
        path = f"/api/v1/licenses/{int(license_id)}"
        return await self._call("PATCH", path, LicenseOut, changes)

    async def suspend(self, license_id: int, *, idempotency_key: str | None = None) -> LicenseOut:
        return await self._action(license_id, "suspend", idempotency_key)

    async def unsuspend(self, license_id: int, *, idempotency_key: str | None = None) -> LicenseOut:
        return await self._action(license_id, "unsuspend", idempotency_key)

    async def revoke(self, license_id: int, *, idempotency_key: str | None = None) -> LicenseOut:
        return await self._action(license_id, "revoke", idempotency_key)

    async def reissue(self, license_id: int, *, idempotency_key: str | None = None) -> LicenseOut:
        """Free the license's bindings: its next check binds again."""
        return await self._action(license_id, "reissue", idempotency_key)

    async def reset_reissues(
        self, license_id: int, *, idempotency_key: str | None = None
    ) -> LicenseOut:
        """Set the license's reissue count back to 0."""
        return await self._action(license_id, "reset-reissues", idempotency_key)

    async def renew(
        self, license_id: int, expires: dt.date | None, *, idempotency_key: str | None = None
    ) -> LicenseOut:
        """A new last valid day (UTC), or None for no expiry."""
        return await self._action(
            license_id, "renew", idempotency_key, RenewRequest(expires=expires)
        )

    async def bindings(self, license_id: int) -> list[BindingOut]:
        """The domains, IPs and directories the license is bound to."""
        path = f"/api/v1/licenses/{int(license_id)}/bindings"
        return (await self._call("GET", path, BindingList)).items

    async def release_binding(
        self,
        license_id: int,
        kind: Literal["domain", "ip", "directory"],
        value: str,
        *,
        idempotency_key: str | None = None,
    ) -> LicenseOut:
        """Free one binding (`value` as `bindings()` lists it): its seat is free for the next
        check."""
        body = BindingRelease(kind=kind, value=value)
        return await self._action(license_id, "bindings/release", idempotency_key, body)

    async def attempt_page(
        self,
        *,
        license_id: int | None = None,
        result: str | None = None,
        reason: str | None = None,
        product: str | None = None,
        ip: str | None = None,
        domain: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> AttemptPage:
        """One page of the verification attempt log, newest first; `ip` may be an IPv4 range,
        `since` (inclusive) and `until` (exclusive) must carry a time zone."""
        query = {"license": license_id, "result": result, "reason": reason, "product": product,
                 "ip": ip, "domain": domain, "since": since, "until": until, "cursor": cursor,
                 "limit": limit}  # fmt: skip
        return await self._call("GET", "/api/v1/attempts", AttemptPage, query=query)

    def attempts(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[AttemptOut]:
        """Every attempt matching `filters` (those of `attempt_page`), page after page."""
        return self._walk(
            lambda cursor: self.attempt_page(cursor=cursor, limit=page_size, **filters)
        )

    async def ban_page(self, *, cursor: str | None = None, limit: int | None = None) -> BanPage:
        """One page of bans, newest first."""
        query = {"cursor": cursor, "limit": limit}
        return await self._call("GET", "/api/v1/bans", BanPage, query=query)

    def bans(self, *, page_size: int = 100) -> AsyncIterator[BanOut]:
        """Every ban, page after page."""
        return self._walk(lambda cursor: self.ban_page(cursor=cursor, limit=page_size))

    async def ban(
        self,
        kind: Literal["domain", "ip"],
        value: str,
        reason: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> BanOut:
        """Ban a domain or an IP / range: its checks answer suspended. A value banned already
        is a 409."""
        body = BanIn(kind=kind, value=value, reason=reason)
        return await self._call("POST", "/api/v1/bans", BanOut, body, idempotency_key)

    async def lift_ban(self, ban_id: int, *, missing_ok: bool = False) -> None:
        """Lift a ban; 404 if there is none with this id. A DELETE is sent again after a lost
        answer (by this client, or by aiohttp itself on a dropped keep-alive connection), so
        a 404 may mean that this call's own first try lifted it: `missing_ok=True` takes a
        404 as success (the ban is gone either way)."""
        try:
            await self._call("DELETE", f"/api/v1/bans/{int(ban_id)}", None)
        except ApiProblem as problem:
            if not (missing_ok and problem.status == 404):
                raise

    # -- webhooks (issue #14) -------------------------------------------------------------

    async def webhooks(self) -> list[WebhookOut]:
        return (await self._call("GET", "/api/v1/webhooks", WebhookList)).items

    async def webhook(self, webhook_id: int) -> WebhookOut:
        return await self._call("GET", f"/api/v1/webhooks/{int(webhook_id)}", WebhookOut)

    async def create_webhook(
        self, spec: EndpointSpec, *, idempotency_key: str | None = None
    ) -> WebhookOut:
        """Register an endpoint; a URL the server refuses (not https, not public) is a 400."""
        return await self._call("POST", "/api/v1/webhooks", WebhookOut, spec, idempotency_key)

    async def update_webhook(self, webhook_id: int, spec: EndpointSpec) -> WebhookOut:
        """Replace the endpoint's settings (PUT: every field; `enabled` defaults to true)."""
        return await self._call("PUT", f"/api/v1/webhooks/{int(webhook_id)}", WebhookOut, spec)

    async def delete_webhook(self, webhook_id: int) -> None:
        await self._call("DELETE", f"/api/v1/webhooks/{int(webhook_id)}", None)

    async def webhook_deliveries(
        self, webhook_id: int, *, before: int | None = None, limit: int | None = None
    ) -> DeliveryPageOut:
        """One page of an endpoint's deliveries, newest first; `next_before` leads on."""
        return await self._call(
            "GET", f"/api/v1/webhooks/{int(webhook_id)}/deliveries", DeliveryPageOut,
            query={"before": before, "limit": limit},
        )  # fmt: skip

    async def resume_webhook(
        self, webhook_id: int, *, idempotency_key: str | None = None
    ) -> ResumeAnswer:
        """Unpause the endpoint and send its failed and waiting deliveries again."""
        return await self._call(
            "POST", f"/api/v1/webhooks/{int(webhook_id)}/resume", ResumeAnswer, None,
            idempotency_key,
        )  # fmt: skip

    async def webhook_public_key(self) -> WebhookPublicKey:
        """The key receivers verify signatures with (`whpk_...`)."""
        return await self._call("GET", "/api/v1/webhooks/public-key", WebhookPublicKey)

    async def alert_page(
        self,
        *,
        state: Literal["unresolved", "open", "acknowledged", "resolved", "all"] | None = None,
        detector: str | None = None,
        severity: Literal["low", "medium", "high"] | None = None,
        license_id: int | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> AlertPage:
        """One page of alerts, newest first; unresolved (open or acknowledged) by default.
        `since` / `until` (with a time zone) keep the alerts seen within them."""
        query = {"state": state, "detector": detector, "severity": severity,
                 "license": license_id, "since": since, "until": until, "cursor": cursor,
                 "limit": limit}  # fmt: skip
        return await self._call("GET", "/api/v1/alerts", AlertPage, query=query)

    def alerts(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[AlertOut]:
        """Every alert matching `filters` (those of `alert_page`), page after page."""
        return self._walk(lambda cursor: self.alert_page(cursor=cursor, limit=page_size, **filters))

    async def alert(self, alert_id: int) -> AlertOut:
        """One alert with its evidence (and the actions the server took on its own)."""
        return await self._call("GET", f"/api/v1/alerts/{int(alert_id)}", AlertOut)

    async def acknowledge_alert(
        self, alert_id: int, *, idempotency_key: str | None = None
    ) -> AlertOut:
        """Acknowledge an open alert; 409 when it is not open."""
        path = f"/api/v1/alerts/{int(alert_id)}/acknowledge"
        return await self._call("POST", path, AlertOut, None, idempotency_key)

    async def resolve_alert(self, alert_id: int, *, idempotency_key: str | None = None) -> AlertOut:
        """Resolve an open or acknowledged alert; 409 when it is resolved already."""
        path = f"/api/v1/alerts/{int(alert_id)}/resolve"
        return await self._call("POST", path, AlertOut, None, idempotency_key)

    async def create_token(self, refresh_token: str | None = None) -> TokenAnswer:
        """`POST /api/v1/tokens`: the API key (no `refresh_token`) or a refresh token for an
        access token and the next refresh token. Token mode calls this itself; a caller that
        manages tokens of its own must spend each refresh token once only."""
        if refresh_token is None:
            request = TokenRequest(grant_type="api_key")
            return await self._call("POST", TOKENS_PATH, TokenAnswer, request, auth="key")
        request = TokenRequest(grant_type="refresh_token", refresh_token=refresh_token)
        return await self._call("POST", TOKENS_PATH, TokenAnswer, request, auth="none")

    async def _action(
        self, license_id: int, name: str, key: str | None, body: BaseModel | None = None
    ) -> LicenseOut:
        path = f"/api/v1/licenses/{int(license_id)}/{name}"
        return await self._call("POST", path, LicenseOut, body, key)

    # -- token mode ---------------------------------------------------------------------------

    async def _access(self) -> str:
        """The access token to send now: the current one, or a new one when there is none or
        this client's clock says it is about to expire."""
        access = self.__access
        if access is None or self._clock() >= self._access_until:
            await self._renew(access)
            access = self.__access
        assert access is not None  # _renew stores one or raises
        return access

    async def _renew(self, stale: str | None) -> None:
        """Replace the access token `stale` (None: there is none yet). Under a lock, so that
        concurrent calls that all found it stale share one renewal: whoever comes second sees
        a new token and uses it. The refresh token is taken out before it is sent, so it is
        never sent twice, whatever the outcome (RFC 9700 §4.14: a refresh token presented
        twice revokes its whole family). A refresh refused (family revoked, token reused or
        expired) or lost on the way falls back to exchanging the API key, once; that failing
        raises. (ASVS 4.0.3 V3.5.2: short-lived tokens; V7.1.1: none of them logged.)"""
        async with self._renewing:
            if self.__access is not stale and self._clock() < self._access_until:
                return  # another call renewed it meanwhile
            refresh, self.__refresh = self.__refresh, None
            self.__access = None
            started = self._clock()
            pair = None
            if refresh is not None:
                try:
                    pair = await self.create_token(refresh)
                except ApiProblem as problem:
                    if problem.status != 401:
                        raise
                    log.info("refresh refused (%s); exchanging the API key again", problem.slug)
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    log.info("refresh lost (%s); exchanging the API key again",
                             type(exc).__name__)  # fmt: skip
            if pair is None:
                pair = await self.create_token()
            self.__access, self.__refresh = pair.access_token, pair.refresh_token
            # A token cut short by its key's expiry still serves half its life.
            margin = min(self._refresh_margin, pair.expires_in / 2)
            self._access_until = started + pair.expires_in - margin
            log.debug("access token renewed, valid %d s", pair.expires_in)

    # -- what every call shares -------------------------------------------------------------

    async def _walk(
        self, page: Callable[[str | None], Awaitable[Any]]
    ) -> AsyncIterator[Any]:  # any page model with `items` and `next_cursor`
        cursor = None
        while True:
            answer = await page(cursor)
            for item in answer.items:
                yield item
            cursor = answer.next_cursor
            if cursor is None:
                return

    async def _call(
        self,
        method: str,
        path: str,
        answer: type[Answer] | None,
        body: BaseModel | None = None,
        idempotency_key: str | None = None,
        *,
        query: Mapping[str, object] | None = None,
        auth: Auth = "access",
    ) -> Answer:
        """`answer` None: an answer without a body (204), and the call returns None."""
        headers = {"Accept": "application/json"}
        if method == "POST" and path != TOKENS_PATH:  # the token endpoint keeps no record
            headers[IDEMPOTENCY_HEADER] = idempotency_key or str(uuid.uuid4())
        data = None
        if body is not None:
            data = json.dumps(body.model_dump(mode="json", exclude_unset=True)).encode()
            headers["Content-Type"] = "application/json"
        params = {
            name: _query_value(value) for name, value in (query or {}).items() if value is not None
        }
        raw = await self._send(method, path, headers, data, params, auth)
        if answer is None:
            return None  # type: ignore[return-value]
        return answer.model_validate_json(raw)

    async def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        data: bytes | None,
        params: dict,
        auth: Auth,
    ) -> bytes:
        """The body of a 2xx answer, after the retries this call allows."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self._base + path
        tokens = auth == "access" and self._use_tokens
        # The refresh grant is never re-sent: the first may have spent the token.
        resend = method in RETRY_AFTER_CONNECTION_ERROR and not (
            path == TOKENS_PATH and auth == "none"
        )
        attempt = 0
        renewed = False  # token mode: renewed once after a 401 invalid_token
        while True:
            attempt += 1
            access = await self._access() if tokens else None
            try:
                async with self._session.request(
                    method, url, headers=headers | self._credential(auth, access), data=data,
                    params=params, timeout=self._timeout, allow_redirects=False,
                ) as response:  # fmt: skip
                    raw = await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    challenge = response.headers.get("WWW-Authenticate", "")
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if not resend or attempt > self._retries:
                    raise
                wait = min(self._max_wait, 0.25 * 2 ** (attempt - 1)) * _jitter()
                log.info("%s %s: %s; retry %d in %.2f s", method, path, type(exc).__name__,
                         attempt, wait)  # fmt: skip
                await self._sleep(wait)
                continue
            log.debug("%s %s -> %d", method, path, status)
            if 200 <= status < 300:
                return raw
            if tokens and status == 401 and not renewed and 'error="invalid_token"' in challenge:
                renewed = True  # expired or revoked: renew once and send again
                log.info("%s %s: access token refused; renewing it", method, path)
                await self._renew(access)
                continue
            problem = ApiProblem.of(status, raw, retry_after)
            if not self._may_retry(problem, method) or attempt > self._retries:
                raise problem
            wait = retry_after if retry_after is not None else 1.0
            if wait > self._max_wait:
                raise problem
            log.info("%s %s: %d %s; retry %d in %.1f s", method, path, status, problem.slug,
                     attempt, wait)  # fmt: skip
            await self._sleep(wait)

    @staticmethod
    def _may_retry(problem: ApiProblem, method: str) -> bool:
        if problem.status == 429:  # refused before anything ran
            return True
        # The client's own earlier try with this Idempotency-Key is still running.
        return (
            problem.status == 409 and method == "POST" and problem.slug == "idempotency-key-in-use"
        )


def _query_value(value: object) -> str:
    """A query parameter as the server parses it (RFC 3339 for a time)."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _jitter() -> float:
    return random.uniform(0.5, 1.0)  # noqa: S311 - spreads retries, no secret  # nosec B311


def _segment(value: str) -> str:
    """One path segment, percent-encoded (a '/' or '?' in a code cannot change the path)."""
    return quote(value, safe="")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _checked_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url: an http(s) URL, e.g. https://licenses.example.com")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("base_url: use https; the API key must not cross a network in clear")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url: scheme, host, port and path only")
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

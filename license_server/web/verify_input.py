"""Reading and validating a verification request (ASVS 4.0.3 V5.1.3, V5.1.4).

JSON objects and form bodies (urlencoded or multipart) are accepted; unknown fields are
ignored, a missing, oversized or malformed field is a 400 naming the field. Values are
normalised here (domain, IP, directory) so the decision only ever sees canonical forms.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from license_server.licensing.decision import Facts
from license_server.licensing.domains import (
    InvalidHost,
    normalise_directory,
    normalise_domain,
    normalise_ip,
)
from license_server.licensing.verifier import RawBinding
from license_server.web import request_body
from license_server.web.pipeline import CheckInput
from license_server.web.request_body import Malformed


async def read_fields(request: web.Request, seconds: float) -> dict[str, Any]:
    """The request's fields: a JSON object, or a form (urlencoded or multipart); Malformed
    (400 / 408 / 413 / 415) otherwise. Duplicate fields are refused (V5.1.1)."""
    content_type = request.content_type
    if content_type == request_body.JSON:
        return request_body.parse_json_object(await request_body.read_body_once(request, seconds))
    if content_type == request_body.URLENCODED:
        return request_body.parse_urlencoded(await request_body.read_body_once(request, seconds))
    if content_type == request_body.MULTIPART:
        return await request_body.read_multipart(request, seconds)
    raise Malformed(
        415,
        "Unsupported Media Type",
        "Send application/json or application/x-www-form-urlencoded.",
        "http_415",
    )


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    license_key: str = Field(min_length=1, max_length=255)
    domain: str = Field(min_length=1, max_length=253)
    ip: str = Field("", max_length=64)
    directory: str = Field("", max_length=1024)
    product: str = Field("", max_length=32)
    client_version: str = Field("", max_length=64)
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, value: str) -> str:
        _normalised(normalise_domain, value)
        return value

    @field_validator("ip")
    @classmethod
    def _valid_ip(cls, value: str) -> str:
        if value:
            _normalised(normalise_ip, value)
        return value

    @field_validator("directory")
    @classmethod
    def _valid_directory(cls, value: str) -> str:
        if value:
            _normalised(normalise_directory, value)
        return value


class CheckedRequest(NamedTuple):
    """A request that passed `VerifyRequest`'s rules (by the model or by the fast path).

    A named tuple: immutable, and built in less than half a frozen dataclass's time (one
    per check; issue #16)."""

    license_key: str
    domain: str
    ip: str
    directory: str
    product: str
    client_version: str
    nonce: str

    def check_input(self, source_ip: str) -> CheckInput:
        """What the pipeline is handed (the validators proved that these normalise; the
        normalisers are cached, so this is a lookup, not a second parse)."""
        return _check_input(*self, source_ip)


_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# (name, min length, max length) of every string field of VerifyRequest, as its Field()s say.
_LIMITS = (
    ("license_key", 1, 255),
    ("domain", 1, 253),
    ("ip", 0, 64),
    ("directory", 0, 1024),
    ("product", 0, 32),
    ("client_version", 0, 64),
)


def checked_input(fields: dict[str, Any], source_ip: str) -> CheckInput:
    """The pipeline's input from `VerifyRequest.model_validate(fields)`, with a fast path for
    the common request.

    The model's rules, checked by hand for a request that passes them all: every field a
    string with no surrounding whitespace (nothing to strip), within its length, the nonce
    matching its pattern, and domain / IP / directory normalising (cached). Anything else,
    and every refusal, goes through pydantic itself, so the rules and the error messages stay
    the model's alone (ValidationError). Validation and filling the model took ~8 us of a
    check (issue #16); this path ~2 us.
    """
    return _fast_path(fields, source_ip) or CheckedRequest(
        **VerifyRequest.model_validate(fields).model_dump()
    ).check_input(source_ip)


def _fast_path(fields: dict[str, Any], source_ip: str) -> CheckInput | None:
    """The input if the request passes every rule of the model as it stands, else None.

    Straight to the pipeline's input, not through a `CheckedRequest`: each value is
    normalised once, here, where it is checked (issue #16: a fifth less time, in isolation,
    than validating into the named tuple and normalising again from it)."""
    values: list[str] = []  # in _LIMITS order, which is CheckedRequest's
    for name, shortest, longest in _LIMITS:
        value = fields.get(name, "")
        if type(value) is not str or not shortest <= len(value) <= longest:
            return None
        if value and (value[0].isspace() or value[-1].isspace()):
            return None  # pydantic strips (by its own rules)
        values.append(value)
    nonce = fields.get("nonce")
    if type(nonce) is not str or _NONCE.fullmatch(nonce) is None:
        return None
    try:
        return _check_input(*values, nonce, source_ip)
    except (InvalidHost, ValueError):
        return None


def _check_input(
    key: str,
    domain: str,
    ip: str,
    directory: str,
    product: str,
    client_version: str,
    nonce: str,
    source_ip: str,
) -> CheckInput:
    """A request's values (CheckedRequest's order) as the pipeline takes them; raises if the
    domain, IP or directory does not normalise. A module that does not know its own address
    is judged by the one it called from. Product codes are case-insensitive."""
    facts = Facts(
        normalise_domain(domain),
        normalise_ip(ip) if ip else source_ip,
        normalise_directory(directory) if directory else "",
        product.lower(),
    )
    raw = RawBinding(domain, ip, directory)
    return CheckInput(key, raw, facts, "", client_version, False, nonce)


def _normalised(normalise, value: str) -> str:
    try:
        return normalise(value)
    except (InvalidHost, ValueError) as exc:
        raise ValueError(str(exc)) from None


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if field == "nonce" and error["type"] == "string_pattern_mismatch":
            message = "must be 16-64 characters of A-Z, a-z, 0-9, '-' and '_'"
        errors.append({"field": field, "message": message})
    return errors

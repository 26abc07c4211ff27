"""Reading and validating a verification request (ASVS 4.0.3 V5.1.3, V5.1.4).

JSON objects and form bodies (urlencoded or multipart) are accepted; unknown fields are
ignored, a missing, oversized or malformed field is a 400 naming the field. Values are
normalised here (domain, IP, directory) so the decision only ever sees canonical forms.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from license_server.licensing.decision import Facts
from license_server.licensing.domains import (
    InvalidHost,
    normalise_directory,
    normalise_domain,
    normalise_ip,
)
from license_server.licensing.verifier import RawBinding

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
JSON_TYPES = frozenset({"application/json"})


class BadBody(ValueError):
    """The body cannot be read as fields at all (not a JSON object)."""


async def read_fields(request: web.Request) -> dict[str, Any]:
    """The request's fields as a dict; raises HTTP 413 (too large) / 415 (type), or BadBody."""
    content_type = request.content_type
    if content_type in JSON_TYPES:
        raw = await request.read()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            raise BadBody("the body is not a JSON object")
        return data
    if content_type in FORM_TYPES:
        form = await request.post()
        return {name: value for name, value in form.items() if isinstance(value, str)}
    raise web.HTTPUnsupportedMediaType(
        text="Send application/json or application/x-www-form-urlencoded."
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

    _domain: str = PrivateAttr("")
    _ip: str = PrivateAttr("")
    _directory: str = PrivateAttr("")

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

    def model_post_init(self, context: Any) -> None:
        self._domain = normalise_domain(self.domain)
        self._ip = normalise_ip(self.ip) if self.ip else ""
        self._directory = normalise_directory(self.directory) if self.directory else ""

    def facts(self, source_ip: str) -> Facts:
        # A module that does not know its own address is judged by the one it called from.
        return Facts(self._domain, self._ip or source_ip, self._directory, self.product)

    def raw(self) -> RawBinding:
        return RawBinding(self.domain, self.ip, self.directory)


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

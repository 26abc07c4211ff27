"""Every refusal of the vendor API as an RFC 9457 problem document, and the middleware that
makes sure nothing else ever leaves the API (ASVS 4.0.3 V7.4.1: no stack trace, no internals).

`ApiProblem` is raised anywhere below a handler; aiohttp's own errors (404, 405, 413) and any
unexpected exception become problem documents here too. Validation failures list each bad field
in `errors`: where it was (`body`, `query`, `path`, `header`), its name, a JSON pointer into the
body, and a one-line message; the rejected value is never echoed (it may be a secret).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from license_server.web.problems import problem_response

log = logging.getLogger(__name__)


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        slug: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug
        self.errors = errors
        self.headers = headers

    def response(self) -> web.Response:
        extra: dict[str, Any] = {} if self.errors is None else {"errors": self.errors}
        return problem_response(
            self.status, self.title, self.detail, slug=self.slug, headers=self.headers, **extra
        )


def field_error(location: str, field: str, message: str) -> dict[str, str]:
    pointer = "/" + field.replace("~", "~0").replace(".", "/") if field else ""
    return {"location": location, "field": field, "pointer": pointer, "message": message}


def invalid(location: str, errors: list[dict[str, str]], detail: str = "") -> ApiProblem:
    return ApiProblem(
        400,
        "Invalid request",
        detail or "; ".join(f"{e['field'] or location}: {e['message']}" for e in errors)[:500],
        slug="invalid-request",
        errors=errors,
    )


def from_validation(exc: ValidationError, location: str) -> ApiProblem:
    errors = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        errors.append(field_error(location, field, error["msg"].removeprefix("Value error, ")))
    return invalid(location, errors)


def bad_body(detail: str) -> ApiProblem:
    return invalid("body", [field_error("body", "", detail)], detail)


def not_found(detail: str) -> ApiProblem:
    return ApiProblem(404, "Not Found", detail, slug="not-found")


def conflict(detail: str) -> ApiProblem:
    return ApiProblem(409, "Conflict", detail, slug="conflict")


@web.middleware
async def api_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(exc.status, exc.reason, exc.text or exc.reason)
        for name, value in exc.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers.setdefault(name, value)
        return response
    except Exception:
        error_id = secrets.token_hex(8)
        log.exception("unhandled API error %s on %s %s", error_id, request.method, request.path)
        return problem_response(
            500, "Internal Server Error",
            f"The server could not answer this request. Error id: {error_id}.",
            error_id=error_id,
        )  # fmt: skip

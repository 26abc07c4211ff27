"""RFC 9457 problem documents (`application/problem+json`) for every undecided API request."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_TYPE_BASE = "https://license-server.invalid/problems/"


def problem_body(
    status: int, title: str, detail: str, *, slug: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return body


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(problem_body(status, title, detail, slug=slug, **extra)).encode(),
        content_type="application/problem+json",
        headers=headers,
    )

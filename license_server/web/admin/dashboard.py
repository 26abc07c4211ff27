"""The dashboard: where a signed-in member of staff lands.

License counts by status; verifications and refusals per hour over the last week, drawn on the
server as an inline SVG (no script: the CSP allows none) that is an image with a title and a
description, with the same numbers in a table for screen readers; the most frequent refusal
reasons of the last 24 hours and 7 days; and the unresolved alerts (counts by state and the
five most recently seen, linked; `alert:read`). The hourly counts come from
`licensing/attempt_hours.py`, which never scans the log.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from aiohttp import web

from license_server import appkeys
from license_server.licensing.attempt_hours import HourCount
from license_server.runtime import Runtime
from license_server.staff import rbac
from license_server.staff.accounts import SignedIn
from license_server.staff.traffic_console import TrafficConsole
from license_server.web.admin.alerts import ALERT_DESK
from license_server.web.admin.base import SIGNED_IN, STAFF, message, redirect, render

TRAFFIC_CONSOLE = web.AppKey("traffic_console", TrafficConsole)

# The chart's drawing area, in SVG user units (it scales to the card's width).
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 28


def set_up(app: web.Application, runtime: Runtime) -> None:
    app[TRAFFIC_CONSOLE] = TrafficConsole(runtime.licenses)


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    all_points: str  # the polyline of every verification
    refused_points: str
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]  # (x, label): each midnight UTC
    left: int
    right: int
    summary: str  # the chart's description, for screen readers


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above `value` (at least 4: four grid steps)."""
    if value <= 4:
        return 4
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _when(hour: int) -> str:
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(hour))


def chart(hours: list[HourCount]) -> Chart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = _nice_ceiling(max((h.verifications for h in hours), default=0))
    step = plot_w / max(len(hours) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + i * step, 1)

    def y(value: int) -> float:
        return round(TOP + plot_h * (1 - value / top_value), 1)

    def points(attr: str) -> str:
        return " ".join(f"{x(i)},{y(getattr(h, attr))}" for i, h in enumerate(hours))

    y_ticks = [(y(top_value * k // 4), f"{top_value * k // 4:,}") for k in range(5)]
    x_ticks = [
        (x(i), time.strftime("%m-%d", time.gmtime(h.hour)))
        for i, h in enumerate(hours)
        if h.hour % 86400 == 0
    ]
    total = sum(h.verifications for h in hours)
    refused = sum(h.refusals for h in hours)
    busiest = max(hours, key=lambda h: h.verifications, default=None)
    summary = (
        f"Verifications and refusals per hour from {_when(hours[0].hour)} to "
        f"{_when(hours[-1].hour)} UTC: {total:,} verifications, {refused:,} of them refused."
        if hours
        else "No hours to show."
    )
    if busiest is not None and busiest.verifications:
        summary += (
            f" The busiest hour, {_when(busiest.hour)}, had {busiest.verifications:,} "
            f"({busiest.refusals:,} refused)."
        )
    return Chart(WIDTH, HEIGHT, points("verifications"), points("refusals"), y_ticks, x_ticks,
                 LEFT, WIDTH - RIGHT, summary)  # fmt: skip


async def index(request: web.Request) -> web.StreamResponse:
    staff: SignedIn | None = request[SIGNED_IN]
    accounts = request.config_dict[STAFF]
    if staff is None:
        if await accounts.needs_first_admin():
            return message(
                request, 200, "No staff account yet",
                "Open the one-time set-up link the server printed when it started, or make a "
                "new one on the server with: python run.py create-admin",
            )  # fmt: skip
        raise redirect("/admin/login")
    if not staff.mfa_passed:
        raise redirect("/admin/mfa" if staff.account.totp_secret else "/admin/enrol")
    runtime = request.config_dict[appkeys.RUNTIME]
    counts = await runtime.licenses.count_by_status()
    traffic = None
    if rbac.has_permission(staff.account.role, "attempt:read"):
        traffic = await request.config_dict[TRAFFIC_CONSOLE].traffic(staff)
    alerts = None
    if rbac.has_permission(staff.account.role, "alert:read"):
        alerts = await request.config_dict[ALERT_DESK].summary(staff)
    return render(
        request, "admin/dashboard.html", title="Dashboard",
        licenses=[(status.value, n) for status, n in counts.items()],
        traffic=traffic, chart=chart(traffic.hours) if traffic else None, alerts=alerts,
    )  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("", index, name="admin")
    router.add_get("/", index)

"""The alerts pages: the list (filters, keyset pages, newest first), one alert with its evidence
in words, its history and the Acknowledge / Resolve buttons (issue #15).

`alert:read` to read; `alert:acknowledge` to acknowledge or resolve (staff/alert_desk.py says
why resolving needs no permission of its own). The buttons are POST forms with the session's
CSRF token and the Origin check (`read_form`; ASVS 4.0.3 V4.2.2); each change writes an audit
row in its transaction (licensing/alerts.py `change_state`).

Evidence is whatever the detector recorded (JSON). It is shown as labelled facts: counts as
numbers, windows as minutes, times in UTC, lists joined; sample attempts become links to the
attempt log filtered to their address and minute, and the license links to its page.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlencode

from aiohttp import web

from license_server.db.alerts import AlertFilter
from license_server.licensing.alerts import (
    AlertNotFound,
    AlertState,
    Severity,
    StateRefused,
    actions_taken,
    evidence_of,
)
from license_server.staff.accounts import SignedIn
from license_server.web.admin import filters
from license_server.web.admin.base import message, read_form, redirect, render, requires

ALERT_DESK = web.AppKey("alert_desk", object)  # staff/alert_desk.AlertDesk
STATES = ("unresolved", "open", "acknowledged", "resolved", "all")
_STATE_FILTER: dict[str, tuple[str, ...] | None] = {
    "unresolved": (AlertState.OPEN.value, AlertState.ACKNOWLEDGED.value),
    "open": (AlertState.OPEN.value,),
    "acknowledged": (AlertState.ACKNOWLEDGED.value,),
    "resolved": (AlertState.RESOLVED.value,),
    "all": None,
}
SEVERITIES = tuple(s.value for s in Severity)
_DETECTOR = re.compile(r"^[a-z0-9_.-]{1,64}$")
MAX_ID = 2**63 - 1


def parse_filter(query) -> tuple[AlertFilter, dict[str, str]]:
    """The list's filters from a query string; filters.BadFilter names the first bad one."""
    shown = {name: filters.text(query, name, 64) for name in ("state", "detector", "severity")}
    shown["license"] = filters.text(query, "license", 20)
    shown["from"] = filters.text(query, "from", 10)
    shown["to"] = filters.text(query, "to", 10)
    state = shown["state"] or "unresolved"
    if state not in _STATE_FILTER:
        raise filters.BadFilter("state: " + ", ".join(STATES))
    if shown["detector"] and not _DETECTOR.match(shown["detector"]):
        raise filters.BadFilter("detector: a detector's name (letters, digits, _ . -)")
    if shown["severity"] and shown["severity"] not in SEVERITIES:
        raise filters.BadFilter("severity: " + ", ".join(SEVERITIES))
    license_id = None
    if shown["license"]:
        text = shown["license"]
        if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
            raise filters.BadFilter("license: a license id (a whole number)")
        license_id = int(text)
    since, until = filters.day(query, "from"), filters.day(query, "to", end=True)
    if since is not None and until is not None and since >= until:
        raise filters.BadFilter("from: a day before to")
    where = AlertFilter(
        states=_STATE_FILTER[state], detector=shown["detector"] or None,
        severity=shown["severity"] or None, license_id=license_id,
        since_ms=None if since is None else since * 1000,
        until_ms=None if until is None else until * 1000,
    )  # fmt: skip
    return where, shown


def _when_ms(ms: int | None) -> str:
    if ms is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC"


def _minute(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        shown = ", ".join(str(v) for v in value[:50])
        return shown + (f" … ({len(value)} in all)" if len(value) > 50 else "")
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def attempt_link(ip: str | None, license_id: int | None, start_ms: int, end_ms: int) -> str:
    """The attempt log page filtered to an address and/or license, minute by minute."""
    query = {}
    if license_id is not None:
        query["license"] = str(license_id)
    if ip:
        query["ip"] = ip
    query["from"] = _minute(start_ms)
    query["to"] = _minute(end_ms)
    return "/admin/attempts?" + urlencode(query)


_SAMPLE_KEYS = ("sample_attempts", "samples", "attempts")


def evidence_facts(row: dict, evidence: dict) -> tuple[list[tuple[str, str]], list[dict]]:
    """(label, text) facts and the sample attempts (each with a link when it can have one)."""
    facts: list[tuple[str, str]] = []
    samples: list[dict] = []
    for name, value in sorted(evidence.items()):
        if name == "actions_taken":
            continue
        if name in _SAMPLE_KEYS and isinstance(value, list):
            for sample in value[:50]:
                samples.append(_sample(row, sample))
            continue
        if name.endswith("_ms") and isinstance(value, int) and value > 10**11:
            facts.append((_label(name.removesuffix("_ms")), _when_ms(value)))
        elif name.endswith("_seconds") and isinstance(value, (int, float)):
            facts.append((_label(name.removesuffix("_seconds")), _duration(value)))
        elif isinstance(value, bool):
            facts.append((_label(name), "yes" if value else "no"))
        elif isinstance(value, (int, float)):
            facts.append((_label(name), f"{value:,}"))
        elif isinstance(value, dict):
            facts.append((_label(name), "; ".join(f"{k}: {_text(v)}" for k, v in value.items())))
        else:
            facts.append((_label(name), _text(value)))
    return facts, samples


def _sample(row: dict, sample: object) -> dict:
    if isinstance(sample, dict):
        at_ms = sample.get("at_ms")
        ip = sample.get("source_ip") or sample.get("ip")
        text = ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in sample.items() if k not in ("at_ms",)
        )
        if isinstance(at_ms, int) and at_ms > 0:
            text = f"{_when_ms(at_ms)}: {text}"
            link = attempt_link(str(ip) if ip else None, row["license_id"], at_ms, at_ms)
            return {"text": text, "href": link}
        return {"text": text, "href": None}
    return {"text": f"attempt {sample}", "href": None}


def flagged_alerts(rows: list[dict]) -> list[dict]:
    """A license's unresolved alerts for its page, each marked `flagged` when the automatic
    action flag_license was taken on it (licensing/alert_actions.py)."""
    return [
        {**row, "flagged": any(" flagged license " in f" {line} " for line in actions_taken(row))}
        for row in rows
    ]


@requires("alert:read")
async def alert_list(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    desk = request.config_dict[ALERT_DESK]
    try:
        where, shown = parse_filter(request.query)
        before = filters.cursor(request.query)
    except filters.BadFilter as bad:
        everything = {"href": "/admin/alerts", "text": "Show the unresolved alerts"}
        return message(request, 400, "Bad filter", str(bad), link=everything)
    page = await desk.page(staff, where, before)
    detectors = await desk.detectors(staff)
    if shown["detector"] and shown["detector"] not in detectors:
        detectors = [*detectors, shown["detector"]]
    rows = [{**r, "first": _when_ms(r["first_seen_ms"]), "last": _when_ms(r["last_seen_ms"])}
            for r in page.rows]  # fmt: skip
    return render(
        request, "admin/alerts.html", title="Alerts", rows=rows, filters=shown,
        states=STATES, severities=SEVERITIES, detectors=detectors,
        next_url=filters.next_page("/admin/alerts", shown, page.next_before),
    )  # fmt: skip


def _alert_id(request: web.Request) -> int:
    text = request.match_info["alert"]
    if not 0 < int(text) <= MAX_ID:
        raise web.HTTPNotFound()
    return int(text)


@requires("alert:read")
async def alert_page(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    alert_id = _alert_id(request)
    try:
        row, history = await request.config_dict[ALERT_DESK].alert(staff, alert_id)
    except AlertNotFound:
        return message(request, 404, "No such alert", f"There is no alert {alert_id}.",
                       link={"href": "/admin/alerts", "text": "Go to the alerts"})  # fmt: skip
    evidence = evidence_of(row)
    facts, samples = evidence_facts(row, evidence)
    subject_ip = _subject_ip(row["subject"])
    attempts_href = None
    if row["license_id"] is not None or subject_ip:
        attempts_href = attempt_link(
            subject_ip, row["license_id"], row["first_seen_ms"], row["last_seen_ms"]
        )
    history_rows = [
        {"at": h["at"], "who": f"{h['actor_kind']}:{h['actor_id']}" if h["actor_id"]
         else h["actor_kind"], "action": h["action"].removeprefix("alert."),
         "detail": _history_detail(h["detail"])}
        for h in history
    ]  # fmt: skip
    return render(
        request, "admin/alert.html", title=f"Alert {alert_id}", alert=row,
        first=_when_ms(row["first_seen_ms"]), last=_when_ms(row["last_seen_ms"]),
        changed=_when_ms(row["state_changed_ms"]), facts=facts, samples=samples,
        actions=actions_taken(row), attempts_href=attempts_href, history=history_rows,
    )  # fmt: skip


def _subject_ip(subject: str) -> str | None:
    """An alert about one address ("ip:203.0.113.7"): its attempts can be listed."""
    kind, _, value = subject.partition(":")
    return value if kind == "ip" and value else None


def _history_detail(detail: str) -> str:
    try:
        data = json.loads(detail or "{}")
    except ValueError:
        return ""
    if "action" in data and isinstance(data["action"], str):
        return data["action"]
    before = (data.get("before") or {}).get("state")
    after = (data.get("after") or {}).get("state")
    return f"{before} → {after}" if before and after else ""


async def _change(request: web.Request, staff: SignedIn, resolve: bool) -> web.StreamResponse:
    alert_id = _alert_id(request)
    await read_form(request)
    desk = request.config_dict[ALERT_DESK]
    back = {"href": f"/admin/alerts/{alert_id}", "text": "Back to the alert"}
    try:
        await (desk.resolve if resolve else desk.acknowledge)(staff, alert_id)
    except AlertNotFound:
        return message(request, 404, "No such alert", f"There is no alert {alert_id}.")
    except StateRefused as refused:
        return message(request, 409, "Not changed", str(refused), link=back)
    raise redirect(f"/admin/alerts/{alert_id}")


@requires("alert:acknowledge")
async def acknowledge(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _change(request, staff, resolve=False)


@requires("alert:acknowledge")
async def resolve(request: web.Request, staff: SignedIn) -> web.StreamResponse:
    return await _change(request, staff, resolve=True)


def add_routes(router: web.UrlDispatcher) -> None:
    alert = "/alerts/{alert:[0-9]{1,19}}"
    router.add_get("/alerts", alert_list, name="admin_alerts")
    router.add_get(alert, alert_page, name="admin_alert")
    router.add_post(f"{alert}/acknowledge", acknowledge, name="admin_alert_acknowledge")
    router.add_post(f"{alert}/resolve", resolve, name="admin_alert_resolve")

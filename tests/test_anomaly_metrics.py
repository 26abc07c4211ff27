"""GET /metrics shows the anomaly engine: findings dropped on a full queue, alerts the engine
raised per detector, entries per bounded map beside the cap, the last rebuild (tests/test_metrics.py
style: real requests, the exposition parsed by prometheus_client's own parser)."""

from __future__ import annotations

import secrets

from license_server.anomaly import detectors
from license_server.app import create_app
from license_server.appkeys import ANOMALY
from tests.conftest import with_sections
from tests.test_anomaly_end_to_end import GENEROUS, check
from tests.test_metrics import scrape, value

A = "license_server_anomaly_"


async def test_a_key_guessing_run_shows_in_the_engine_metrics(aiohttp_client, settings):
    client = await aiohttp_client(create_app(with_sections(settings, rate_limit=GENEROUS)))
    engine = client.app[ANOMALY]
    await engine.work()  # the start-up rebuild is over
    scraped = await scrape(client)
    assert value(scraped, A + "rebuilding") == 0
    assert value(scraped, A + "rebuild_rows") == 0
    assert value(scraped, A + "rebuild_duration_seconds") >= 0
    assert value(scraped, A + "alerts_raised_total", detector="key_guessing") == 0
    for _ in range(30):
        await check(client, "NOPE-" + secrets.token_hex(8))
    await engine.work()
    scraped = await scrape(client)
    assert value(scraped, A + "observed_total") == 30
    assert value(scraped, A + "alerts_raised_total", detector="key_guessing") == 1
    guesses = {"detector": "key_guessing", "map": "guesses"}
    assert value(scraped, A + "tracked_entries", **guesses) >= 1
    assert value(scraped, A + "tracked_cap", **guesses) == settings.anomaly.max_tracked
    assert value(scraped, A + "tracked_evicted_total", **guesses) == 0
    assert value(scraped, A + "findings_dropped_total") == 0


async def test_a_restart_shows_the_rows_its_rebuild_read(aiohttp_client, settings):
    settings = with_sections(settings, rate_limit=GENEROUS)
    first = await aiohttp_client(create_app(settings))
    for _ in range(4):
        await check(first, "NOPE-" + secrets.token_hex(8))
    await first.close()
    second = await aiohttp_client(create_app(settings))
    await second.app[ANOMALY].work()
    scraped = await scrape(second)
    assert value(scraped, A + "rebuild_rows") == 4
    await second.close()


async def test_findings_dropped_on_a_full_queue_and_evictions_are_counted(
    aiohttp_client, settings, monkeypatch
):
    monkeypatch.setattr(detectors, "QUEUE_MAX", 1)
    client = await aiohttp_client(
        create_app(with_sections(settings, rate_limit=GENEROUS, anomaly={"max_tracked": 100}))
    )
    engine = client.app[ANOMALY]
    await engine.work()
    finding = detectors.Finding("key_guessing", "net:x", 0, detectors.Severity.LOW, "x")
    engine.ctx.emit(finding)
    engine.ctx.emit(finding)  # the queue holds one
    engine.ctx.emit(finding)
    scraped = await scrape(client)
    assert value(scraped, A + "findings_dropped_total") == 2
    assert value(scraped, A + "findings_queued") == 1
    engine.ctx.findings.clear()
    guesses = engine.detectors[1].guesses
    for n in range(150):
        guesses.add(f"net:{n}", 0)
    scraped = await scrape(client)
    labels = {"detector": "key_guessing", "map": "guesses"}
    assert value(scraped, A + "tracked_entries", **labels) == 100
    assert value(scraped, A + "tracked_cap", **labels) == 100
    assert value(scraped, A + "tracked_evicted_total", **labels) == 50


async def test_no_engine_metrics_when_the_detectors_are_off(aiohttp_client, settings):
    client = await aiohttp_client(create_app(with_sections(settings, anomaly={"enabled": False})))
    scraped = await scrape(client)
    assert not [name for name, _ in scraped if name.startswith(A)]

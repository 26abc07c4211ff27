"""GET /metrics: the counters move after real requests, the exposition parses, access control
(address, trusted proxy, bearer token), bounded labels under hostile paths, workers."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from license_server.app import create_app
from license_server.appkeys import ATTEMPT_LOG, METRICS, RATE_LIMITER, RUNTIME
from license_server.licensing.alerts import AlertSignal, Severity
from license_server.web.metrics import MAX_LABEL_SETS
from license_server.web.metrics_endpoint import WorkerSnapshots
from tests.conftest import with_sections
from tests.test_admin_licenses import issue
from tests.verify_helpers import nonce

TOKEN = "t0ken-" + "x" * 40


async def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, through the official parser."""
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scraped, name: str, **labels) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, found), v in scraped.items()
        if n == name and labels.items() <= dict(found).items()
    )


async def verify(client, key: str, domain: str = "shop.example.com"):
    return await client.post(
        "/api/v1/verify", json={"license_key": key, "domain": domain, "nonce": nonce()}
    )


async def test_counters_move_after_real_requests(client):
    _, key = await issue(client)
    before = await scrape(client)
    assert (await verify(client, key)).status == 200
    assert (await verify(client, "MYMOD-" + "A" * 104)).status == 200  # forged
    response = await client.post(
        "/modules/servers/licensing/verify.php", data={"licensekey": key, "domain": "shop.com"}
    )
    assert response.status == 200
    await client.get("/healthz")
    after = await scrape(client)

    def moved(name: str, **labels) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    requests = "license_server_http_requests_total"
    assert moved(requests, endpoint="/api/v1/verify", method="POST", status="200") == 2
    assert moved(requests, endpoint="/healthz", method="GET", status="200") == 1
    assert moved(requests, endpoint="/metrics", method="GET", status="200") == 1
    latency = "license_server_http_request_duration_seconds_count"
    assert moved(latency, area="verify") == 2 and moved(latency, area="whmcs") == 1
    verifications = "license_server_verifications_total"
    assert moved(verifications, endpoint="native", result="active", reason="activated") == 1
    assert moved(verifications, endpoint="native", result="invalid") == 1
    assert moved(verifications, endpoint="whmcs", result="active") == 1
    assert moved("license_server_attempt_log_batch_size_count") >= 1
    assert moved("license_server_attempt_log_batch_size_sum") == 3
    assert value(after, "license_server_attempt_log_pending") == 0
    cache = "license_server_cache_lookups_total"
    assert moved(cache, cache="license", result="miss") >= 1
    assert total(after, "license_server_build_info", version="0.1.0") == 1
    assert value(after, "process_cpu_seconds_total") > 0


async def test_the_license_cache_hits_are_counted(client):
    _, key = await issue(client)
    for _ in range(4):  # the first binds the domain (a change: the cache forgets it)
        assert (await verify(client, key)).status == 200
    scraped = await scrape(client)
    assert value(scraped, "license_server_cache_lookups_total", cache="license", result="hit") >= 2


async def test_admin_and_api_requests_have_their_areas(client):
    await client.get("/admin/licenses", allow_redirects=False)  # not signed in: a redirect
    await client.get("/api/v1/licenses")  # no credential: 401
    scraped = await scrape(client)
    latency = "license_server_http_request_duration_seconds_count"
    assert value(scraped, latency, area="admin") >= 1
    assert value(scraped, latency, area="api") >= 1


async def test_rate_limit_refusals_are_counted_by_limit(aiohttp_client, settings):
    settings = with_sections(settings, rate_limit={"per_ip": "2/minute"})
    client = await aiohttp_client(create_app(settings))
    for _ in range(3):
        await verify(client, "MYMOD-" + "A" * 104)
    scraped = await scrape(client)
    assert value(scraped, "license_server_rate_limited_total", limit="per-ip") == 1
    verifications = "license_server_verifications_total"
    assert value(scraped, verifications, endpoint="native", result="rate_limited", reason="per-ip")
    assert client.app[RATE_LIMITER].refused["per-ip"] == 1


async def test_alerts_raised_are_counted_by_detector(client):
    alerts = client.app[RUNTIME].alerts
    signal = AlertSignal("key_guessing", "net:203.0.113.0/24", Severity.HIGH, "Guessing.")
    await alerts.raise_(signal)
    await alerts.raise_(signal)  # bumped: still a raise
    scraped = await scrape(client)
    name = "license_server_alerts_raised_total"
    assert value(scraped, name, detector="key_guessing", severity="high") == 2


async def test_hostile_paths_do_not_create_label_values(client):
    odd = ["/" + "a" * 4000, "/%00%ff", "/admin/../../etc/passwd", "/api/v1/ünïcødé", "/x?y=z"]
    for index, path in enumerate(odd * 3 + [f"/scan/{n}" for n in range(50)]):
        response = await client.get(path)
        assert response.status in (400, 404), (index, path, response.status)
    await client.request("BREW", "/api/v1/verify")  # an odd method on a real route
    text = await (await client.get("/metrics")).text()
    endpoints = {
        dict(labels)["endpoint"]
        for (name, labels) in samples(text)
        if name == "license_server_http_requests_total"
    }
    assert endpoints <= {"unmatched", "/metrics", "/api/v1/verify"}
    assert "BREW" not in text and "scan" not in text and "aaaa" not in text
    metrics = client.app[METRICS]
    assert len(metrics._per_route) <= 4  # (unmatched, 404), (unmatched, 405), ...


def test_label_values_from_data_are_capped(tmp_path):
    from license_server.licensing.attempt_log import Attempt
    from license_server.web.metrics import Metrics

    metrics = Metrics()

    def attempt(reason: str) -> Attempt:
        return Attempt(
            0, "native", "", "", "", "", "", None, None, "", "invalid", reason, "", "", 0
        )

    metrics.attempts_committed([attempt(f"reason_{n}") for n in range(MAX_LABEL_SETS + 50)])
    from prometheus_client import generate_latest

    scraped = samples(generate_latest(metrics.registry).decode())
    reasons = {
        dict(labels)["reason"]
        for (name, labels) in scraped
        if name == "license_server_verifications_total"
    }
    assert len(reasons) == MAX_LABEL_SETS + 1 and "other" in reasons
    assert len(metrics._per_attempt) == MAX_LABEL_SETS  # the cache of children stops too
    total = sum(v for (n, _), v in scraped.items() if n == "license_server_verifications_total")
    assert total == MAX_LABEL_SETS + 50


# -- access ---------------------------------------------------------------------------------


async def metrics_status(aiohttp_client, settings, headers=None, **sections) -> int:
    client = await aiohttp_client(create_app(with_sections(settings, **sections)))
    return (await client.get("/metrics", headers=headers or {})).status


async def test_loopback_is_allowed_by_default(client):
    assert (await client.get("/metrics")).status == 200


async def test_another_address_gets_the_404_of_an_unknown_path(aiohttp_client, settings):
    client = await aiohttp_client(
        create_app(with_sections(settings, metrics={"allow_from": ["10.0.0.0/8"]}))
    )
    refused = await client.get("/metrics")
    unknown = await client.get("/no-such-page")
    assert refused.status == unknown.status == 404
    assert await refused.read() == await unknown.read()
    assert "license_server" not in await refused.text()


async def test_forwarded_header_is_believed_only_from_a_trusted_proxy(aiohttp_client, settings):
    remote = {"X-Forwarded-For": "203.0.113.9"}
    only_remote = {"allow_from": ["203.0.113.0/24"]}
    # Not configured: the header is ignored, the peer (loopback) is not in allow_from.
    assert await metrics_status(aiohttp_client, settings, remote, metrics=only_remote) == 404
    trusted = {"trusted_proxies": ["127.0.0.1"]}
    assert (
        await metrics_status(aiohttp_client, settings, remote, metrics=only_remote, proxy=trusted)
        == 200
    )
    # Behind a trusted proxy, a remote client is not loopback (the default allow_from).
    assert await metrics_status(aiohttp_client, settings, remote, proxy=trusted) == 404


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer   {TOKEN}  ", 200),
        (None, 404),
        ("Bearer ", 404),
        (f"Bearer {TOKEN[:-1]}", 404),
        (f"Bearer {TOKEN}x", 404),
        (f"Basic {TOKEN}", 404),
        ("Bearer " + "x" * 8000, 404),
        ("Bearer \u00e9\u00e9", 404),
    ],
)
async def test_bearer_token(aiohttp_client, settings, authorization, status):
    headers = {"Authorization": authorization} if authorization is not None else {}
    metrics = {"allow_from": [], "token": TOKEN}
    assert await metrics_status(aiohttp_client, settings, headers, metrics=metrics) == status


async def test_no_token_and_no_networks_is_nobody(aiohttp_client, settings):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        await metrics_status(aiohttp_client, settings, headers, metrics={"allow_from": []}) == 404
    )


def test_the_token_is_a_secret_of_the_environment(tmp_path):
    from license_server.settings import SettingsError, load_settings

    path = tmp_path / "s.toml"
    path.write_text(f'[metrics]\ntoken = "{TOKEN}"\n')
    with pytest.raises(SettingsError, match="LICENSE_SERVER_METRICS_TOKEN"):
        load_settings(path, environ={})
    with pytest.raises(SettingsError, match="metrics"):
        load_settings(None, environ={"LICENSE_SERVER_METRICS_TOKEN": "short"})
    settings = load_settings(None, environ={"LICENSE_SERVER_METRICS_TOKEN": TOKEN})
    assert settings.metrics.token.get_secret_value() == TOKEN


# -- workers --------------------------------------------------------------------------------


async def test_each_worker_serves_every_workers_metrics(aiohttp_client, settings, tmp_path):
    """Two workers' apps on one database and directory: a scrape of either shows both, each
    series with its worker label (web/metrics_endpoint.py)."""
    shared = with_sections(settings, metrics={"directory": str(tmp_path)})
    first = await aiohttp_client(create_app(shared, worker=0))
    second = await aiohttp_client(create_app(shared, maintenance=False, worker=1))
    _, key = await issue(first)
    assert (await verify(second, key)).status == 200
    assert (await verify(second, key)).status == 200
    WorkerSnapshots(second.app[METRICS], tmp_path, 1).write()  # what its task does each second
    scraped = await scrape(first)
    name = "license_server_verifications_total"
    assert total(scraped, name, endpoint="native", result="active", worker="1") == 2
    assert total(scraped, name, endpoint="native", result="active", worker="0") == 0
    requests = "license_server_http_requests_total"
    assert total(scraped, requests, endpoint="/api/v1/verify", worker="1") == 2
    assert total(scraped, requests, endpoint="/api/v1/verify", worker="0") == 0
    assert all("worker" in dict(labels) for _, labels in scraped)
    # The snapshot task writes on its own, too.
    for _ in range(100):
        if (tmp_path / "worker-0.prom").exists():
            break
        await asyncio.sleep(0.05)
    assert (tmp_path / "worker-0.prom").exists()


async def test_a_damaged_snapshot_costs_only_that_worker(aiohttp_client, settings, tmp_path):
    shared = with_sections(settings, metrics={"directory": str(tmp_path)})
    client = await aiohttp_client(create_app(shared, worker=0))
    (tmp_path / "worker-1.prom").write_text("this is { not the text format\n")
    (tmp_path / "worker-x.prom").write_text("ignored: not a worker index\n")
    scraped = await scrape(client)
    assert {dict(labels)["worker"] for _, labels in scraped} == {"0"}


async def test_attempt_log_queue_depth_is_read_when_scraped(client):
    attempt_log = client.app[ATTEMPT_LOG]
    assert attempt_log.pending == 0
    scraped = await scrape(client)
    assert value(scraped, "license_server_attempt_log_pending") == 0


def test_two_worker_processes_each_serve_both_workers_metrics(tmp_path, database_url):
    """`run.py serve` with workers = 2 (SO_REUSEPORT): whichever worker a scrape reaches
    answers with the series of both, and the logs are JSON lines when asked for."""
    import json
    import time

    from tests.server_process import ServerProcess

    env = {
        "LICENSE_SERVER_WORKERS": "2",
        "LICENSE_SERVER_LOGGING_FORMAT": "json",
        "LICENSE_SERVER_LOG_LEVEL": "INFO",
    }
    with ServerProcess(database_url, tmp_path / "keys", tmp_path, env) as server:
        both = 0
        # Bounded: the kernel picks the worker; a new worker's first snapshot may lag its
        # readiness by a moment. Three scrapes in a row must each show both workers.
        for _ in range(200):
            workers = {
                dict(labels).get("worker") for _, labels in samples(server.get("/metrics").decode())
            }
            both = both + 1 if workers == {"0", "1"} else 0
            if both == 3:
                break
            time.sleep(0.05)
        assert both == 3, server.log()
        assert server.stop() == 0, server.log()
    lines = [line for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    access = [json.loads(line) for line in lines if '"aiohttp.access"' in line]
    assert access and all(entry["path"] in ("/metrics", "/readyz") for entry in access)
    assert all(entry["remote"] == "127.0.0.0/24" for entry in access)


async def test_repeated_authorization_headers_are_refused(aiohttp_client, settings):
    from multidict import CIMultiDict

    metrics = {"allow_from": [], "token": TOKEN}
    client = await aiohttp_client(create_app(with_sections(settings, metrics=metrics)))
    headers = CIMultiDict([("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {TOKEN}")])
    assert (await client.get("/metrics", headers=headers)).status == 404
    assert (
        await client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    ).status == 405


async def test_concurrent_checks_are_all_counted(client):
    _, key = await issue(client)
    answers = await asyncio.gather(
        *(verify(client, key) for _ in range(25))
    )  # under per-key 30/minute
    assert all(answer.status == 200 for answer in answers)
    scraped = await scrape(client)
    requests = "license_server_http_requests_total"
    assert value(scraped, requests, endpoint="/api/v1/verify", method="POST", status="200") == 25
    assert total(scraped, "license_server_verifications_total", endpoint="native") == 25
    assert value(scraped, "license_server_attempt_log_batch_size_sum") == 25


def test_the_lock_free_histogram_exports_what_prometheus_clients_own_would():
    """The latency and batch-size histograms are plain numbers exported at scrape (issue #16):
    the same observations, on bucket bounds too, give the same series as prometheus_client's
    Histogram."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from license_server.web.metrics import LATENCY_BUCKETS, Metrics

    values = [0.0, 0.001, 0.0010001, 0.0025, 0.7, 5.0, 5.1, 30.0]
    reference = CollectorRegistry()
    histogram = Histogram(
        "license_server_http_request_duration_seconds",
        "",
        ["area"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    ours = Metrics()
    for value in values:
        histogram.labels("verify").observe(value)
        ours._latency.child(("verify",)).observe(value)

    def series(registry) -> dict:
        return {
            key: value
            for key, value in samples(generate_latest(registry).decode()).items()
            if key[0].startswith("license_server_http_request_duration_seconds_")
            and not key[0].endswith("_created")
        }

    assert series(ours.registry) == series(reference)
    assert series(ours.registry)  # not two empty sets

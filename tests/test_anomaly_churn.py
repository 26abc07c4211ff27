"""Activation churn (anomaly/churn.py) counts moves, not binds: a key passed from site to site
alerts; a multi-seat license with development hosts, reissued now and then, does not."""

from __future__ import annotations

from license_server.anomaly.churn import Churn
from license_server.anomaly.detectors import Context
from license_server.settings import AnomalySettings

T0 = 1_900_000_000  # seconds
HOUR = 3600


def churn() -> Churn:
    return Churn(Context(AnomalySettings()))  # churn_binds = 6 in 7 days


def test_a_key_passed_from_site_to_site_alerts_at_its_sixth_site():
    detector = churn()
    at = T0
    for site in range(6):
        if site:
            detector.observe(7, "release", at)
        detector.observe(7, "bind", at + 60)
        at += HOUR
        assert len(detector.ctx.findings) == (1 if site == 5 else 0)
    (finding,) = detector.ctx.findings
    assert finding.subject == "license:7" and finding.evidence["binds"] == 6
    assert finding.evidence["releases_and_reissues"] == 5


def test_seats_development_hosts_and_reissues_are_not_moves():
    """Near miss: 3 seats and 2 development hosts bound, reissued twice, all re-taken: 15
    binds (the old count alerted at 6) but only 3 moves."""
    detector = churn()
    at = T0
    for round_ in range(3):
        if round_:
            detector.observe(8, "reissue", at)
        for _host in ("a.com", "b.com", "c.com", "localhost", "staging.a.com"):
            at += 60
            detector.observe(8, "bind", at)
        at += 24 * HOUR
    assert list(detector.ctx.findings) == []
    assert len(detector.binds[8]) == 3

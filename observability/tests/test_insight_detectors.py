"""The detectors on their own: figures in, findings out, no database."""

from __future__ import annotations

import math

import pytest

from observability.insight import detectors as d
from observability.insight.detectors import Grading, RouteLimits, RouteWindow, Traffic

IP_LIMITS = Grading(floor=300, factor=5, critical_factor=20)
ROUTE_LIMITS = RouteLimits(
    error_min_requests=50,
    errors=Grading(floor=0.05, factor=3, critical_factor=10),
    latency_min_requests=50,
    latency=Grading(floor=100, factor=2, critical_factor=4),
)


def ip_floods(traffic: list[Traffic], baselines: dict[str, float]) -> list[d.Finding]:
    return d.floods(d.FLOOD_IP, traffic, baselines, IP_LIMITS, window_seconds=60, baseline_seconds=3600)


def test_the_kinds_and_severities_are_the_models() -> None:
    from observability.models import IncidentKind, Severity

    kinds = {
        d.FLOOD_IP,
        d.FLOOD_TENANT,
        d.BRUTE_FORCE_IP,
        d.BRUTE_FORCE_USER,
        d.ERROR_SPIKE,
        d.LATENCY_REGRESSION,
        d.BREAKER_FLAPPING,
    }
    assert kinds == set(IncidentKind.values)
    assert {d.WARNING, d.CRITICAL} <= set(Severity.values)


def test_a_quiet_apis_first_twenty_requests_are_no_flood() -> None:
    assert ip_floods([Traffic("203.0.113.9", requests=20, limited=0)], {}) == []


def test_a_new_address_at_the_floor_is_a_warning_and_at_four_times_it_critical() -> None:
    warning = ip_floods([Traffic("203.0.113.9", requests=300, limited=0)], {})
    critical = ip_floods([Traffic("203.0.113.9", requests=1240, limited=1203)], {})
    assert [f.severity for f in warning] == ["warning"]
    assert [f.severity for f in critical] == ["critical"]
    assert critical[0].evidence["limited_share"] == pytest.approx(0.97, abs=0.001)
    assert critical[0].summary == (
        "Traffic from 203.0.113.9 is 1,240 req/min against a 1-hour baseline of 0 req/min "
        "(flood floor 300 req/min); 97 % answered 429."
    )


def test_a_busy_address_is_judged_against_its_baseline() -> None:
    # 1,240 req/min is its normal level: nothing; 14 times its baseline of 88.6: critical.
    assert ip_floods([Traffic("203.0.113.9", requests=1240, limited=0)], {"203.0.113.9": 1000.0}) == []
    [finding] = ip_floods([Traffic("203.0.113.9", requests=1240, limited=1203)], {"203.0.113.9": 88.6})
    assert finding.summary == "Traffic from 203.0.113.9 is 14× its 1-hour baseline: 1,240 req/min; 97 % answered 429."  # noqa: RUF001
    assert finding.evidence["ratio"] == 14.0


def test_the_rate_is_per_minute_whatever_the_window() -> None:
    [finding] = d.floods(d.FLOOD_IP, [Traffic("a", 10, 0)], {}, IP_LIMITS, window_seconds=1, baseline_seconds=60)
    assert finding.evidence["rate_per_min"] == 600.0


def test_the_ewma_weight_follows_the_elapsed_time() -> None:
    assert d.ewma_alpha(60, 3600) == pytest.approx(1 - math.exp(-1 / 60))
    assert d.ewma_alpha(0, 3600) == 0.0
    # One period at alpha 0.5 moves halfway; silence decays; a frozen subject stays put.
    nxt = d.baselines_update({"a": 100.0, "b": 10.0, "c": 50.0}, {"a": 200.0}, alpha=0.5, absent=0.0, frozen={"c"})
    assert nxt == {"a": 150.0, "b": 5.0, "c": 50.0}


def test_baselines_stay_bounded() -> None:
    current = {f"10.0.{n // 256}.{n % 256}": float(n + 1) for n in range(1000)}
    nxt = d.baselines_update({}, current, alpha=1.0, absent=0.0, max_subjects=100)
    assert len(nxt) == 100
    assert min(nxt.values()) == 901.0  # the largest are kept
    assert d.baselines_update({"gone": 0.0005}, {}, alpha=0.5, absent=0.0) == {}


def test_latency_baselines_start_from_the_first_sample_and_keep_without_one() -> None:
    nxt = d.baselines_update({"/b": 80.0}, {"/a": 120.0}, alpha=0.1, absent=None, seed_with_first=True)
    assert nxt == {"/a": 120.0, "/b": 80.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [0] * len(d.LATENCY_BUCKETS_MS)
    buckets[6] = 100  # all in (100, 150] ms
    assert d.histogram_quantile(0.95, buckets) == pytest.approx(147.5)
    assert d.histogram_quantile(0.5, [0] * len(buckets)) is None
    buckets[-1] = 1000  # most beyond the last finite bound: that bound
    assert d.histogram_quantile(0.95, buckets) == 60000


def test_brute_force_counts_logins_and_gateway_failures_per_address_and_logins_per_user() -> None:
    found = d.brute_force(
        login_failures_by_ip={"203.0.113.5": 12, "198.51.100.1": 3},
        gateway_auth_failures_by_ip={"198.51.100.1": 60},
        login_failures_by_user={"alice": 9, "bob": 10},
        user_tenants={"bob": "0b5e..."},
        ip_threshold=10,
        user_threshold=10,
        critical_factor=5,
        window_seconds=300,
    )
    by_subject = {(f.kind, f.subject): f for f in found}
    assert set(by_subject) == {
        ("brute_force_ip", "203.0.113.5"),
        ("brute_force_ip", "198.51.100.1"),
        ("brute_force_user", "bob"),
    }
    assert by_subject[("brute_force_ip", "198.51.100.1")].severity == "critical"  # 63 >= 50
    assert by_subject[("brute_force_ip", "198.51.100.1")].summary == (
        "3 failed logins and 60 rejected gateway credentials from 198.51.100.1 in 5 minutes."
    )
    assert by_subject[("brute_force_user", "bob")].tenant_uuid == "0b5e..."


def test_an_error_spike_needs_enough_requests_and_a_share_above_floor_and_baseline() -> None:
    def spikes(requests: int, errors: int, baseline: float) -> list[str]:
        route = RouteWindow("/api/orders", 1, requests=requests, errors=errors)
        found = d.error_spikes(
            [route], {"/api/orders": baseline}, ROUTE_LIMITS, window_seconds=60, baseline_seconds=3600
        )
        return [f.severity for f in found]

    assert spikes(10, 9, 0.0) == []  # too few requests to say anything
    assert spikes(1000, 40, 0.0) == []  # 4 %: under the 5 % floor
    assert spikes(1000, 60, 0.0) == ["warning"]
    assert spikes(1000, 60, 0.05) == []  # 6 % is this route's normal
    assert spikes(1000, 400, 0.01) == ["critical"]


def test_a_latency_regression_compares_the_p95_with_the_routes_own_baseline() -> None:
    buckets = [0] * len(d.LATENCY_BUCKETS_MS)
    buckets[13] = 100  # (1500, 2000] ms
    route = RouteWindow("/api/orders", 1, requests=100, errors=0, latency_buckets=tuple(buckets))
    judge = {"window_seconds": 60, "baseline_seconds": 3600}
    assert d.latency_regressions([route], {}, ROUTE_LIMITS, **judge) == []  # no baseline yet
    [finding] = d.latency_regressions([route], {"/api/orders": 300.0}, ROUTE_LIMITS, **judge)
    assert finding.severity == "critical"
    assert finding.summary.startswith("Route /api/orders p95 latency is 1,975 ms, 6.6× its 1-hour baseline of 300 ms")  # noqa: RUF001
    assert d.latency_regressions([route], {"/api/orders": 1500.0}, ROUTE_LIMITS, **judge) == []


def test_a_breaker_that_opens_again_and_again_is_flapping() -> None:
    found = d.breaker_flapping(
        {"http://a": 2, "http://b": 3, "http://c": 9}, threshold=3, critical=6, window_seconds=600
    )
    assert [(f.subject, f.severity) for f in found] == [("http://b", "warning"), ("http://c", "critical")]
    assert found[0].summary == "The breaker of upstream http://b opened 3 times in 10 minutes."

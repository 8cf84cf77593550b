"""The dashboard's per-second buckets and percentiles (`observability.dashboard.live`), and the
snapshot built from them: pure functions, no server."""

from __future__ import annotations

import random

import pytest

from core.tiles import DashboardScope
from gateway.engine.proxy import RequestRecord
from observability.dashboard.fleet import FleetWindow, Gauges, MemoryFleet
from observability.dashboard.live import OTHER, TOP_K, Bucket, Counts, LiveRecorder, merge_seconds, percentile
from observability.dashboard.snapshot import snapshot_build

pytestmark = pytest.mark.django_db

ALICE_TENANT = "6f1c1e2a-0000-4000-8000-00000000000a"
MALLORY_TENANT = "6f1c1e2a-0000-4000-8000-00000000000b"


def record(
    status: int = 200, latency_ms: float = 5.0, tenant: str | None = ALICE_TENANT, route: str = "/a/"
) -> RequestRecord:
    return RequestRecord(
        correlation_id="c", trace_id="", route=route, tenant_key=tenant, tier="standard",
        method="GET", path=f"{route}x", status=status, decision="forwarded", latency_ms=latency_ms,
    )  # fmt: skip


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_second_counts_by_status_class_and_keeps_429_and_503_apart() -> None:
    counts = Counts()
    for status in (200, 201, 304, 404, 429, 429, 500, 503, 503, 502):
        counts.add(status, 10.0)
    assert (counts.requests, counts.client_errors, counts.errors) == (10, 3, 4)
    assert (counts.s429, counts.s503) == (2, 2)


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentiles_from_the_histogram_are_within_their_bucket_of_the_exact_value(q: float) -> None:
    # Given 10,000 latencies spread over three orders of magnitude (a log-uniform draw)
    rng = random.Random(7)
    latencies = sorted(10 ** rng.uniform(-0.5, 3) for _ in range(10_000))
    counts = Counts()
    for latency in latencies:
        counts.add(200, latency)
    # When the quantile is read from the fixed histogram
    estimate = percentile(counts.latency, q)
    # Then it lies within 25 % of the exact order statistic (the widest bucket spans x1.5-2)
    exact = latencies[int(q * len(latencies)) - 1]
    assert estimate is not None
    assert abs(estimate - exact) / exact < 0.25


def test_percentiles_of_nothing_are_none_and_of_one_value_fall_in_its_bucket() -> None:
    assert percentile(Counts().latency, 0.5) is None
    one = Counts()
    one.add(200, 42.0)
    assert 30 <= (percentile(one.latency, 0.99) or 0) <= 50


def test_the_recorder_buckets_per_second_and_hands_each_finished_second_once() -> None:
    clock = Clock(1000.2)
    recorder = LiveRecorder(clock=clock)
    recorder(record())
    recorder(record(status=429))
    clock.now = 1001.5
    recorder(record(status=503))
    # The second in progress is not handed over; 1000 is
    finished = recorder.take_finished()
    assert [(b.second, b.total.requests, b.total.s429) for b in finished] == [(1000, 2, 1)]
    assert recorder.take_finished() == []
    clock.now = 1003.0
    assert [(b.second, b.total.s503) for b in recorder.take_finished()] == [(1001, 1)]


def test_a_bucket_keeps_at_most_top_k_tenants_and_routes_the_rest_count_as_other() -> None:
    bucket = Bucket(1)
    for n in range(TOP_K + 25):
        bucket.add(record(tenant=f"ip:198.51.100.{n}", route=f"/r{n}/"))
    assert len(bucket.tenants) == TOP_K + 1 and bucket.tenants[OTHER].requests == 25
    assert len(bucket.routes) == TOP_K + 1 and bucket.routes[f"{OTHER}|{OTHER}"] == 25
    assert bucket.total.requests == TOP_K + 25


def test_buckets_survive_json_and_merge_by_addition() -> None:
    first, second = Bucket(5), Bucket(5)
    first.add(record(latency_ms=3))
    second.add(record(status=500, latency_ms=700, tenant=MALLORY_TENANT, route="/m/"))
    merged = merge_seconds([Bucket.from_json(first.to_json()), Bucket.from_json(second.to_json())])[5]
    assert (merged.total.requests, merged.total.errors) == (2, 1)
    assert set(merged.tenants) == {ALICE_TENANT, MALLORY_TENANT}
    assert merged.routes == {f"{ALICE_TENANT}|/a/": 1, f"{MALLORY_TENANT}|/m/": 1}


@pytest.fixture
def two_tenants_window() -> FleetWindow:
    """A minute in which alice's tenant sent 30 requests (3 of them 429) and mallory's 100 (10 503)."""
    fleet = MemoryFleet()
    buckets = []
    for second in range(940, 1000):
        bucket = Bucket(second)
        if second % 2 == 0:
            bucket.add(record(status=429 if second % 20 == 0 else 200, latency_ms=4))
        for _ in range(2 if second < 990 else 1):
            bucket.add(record(status=503 if second >= 990 else 200, tenant=MALLORY_TENANT, route="/evil/"))
        buckets.append(bucket)
    fleet.push(buckets, Gauges("web-1", 3, 12.5))
    window = fleet.window(1000)
    # MemoryFleet forgets seconds older than a minute of the wall clock: keep these ones.
    window.seconds = {b.second: b for b in buckets}
    return window


def test_the_fleet_snapshot_sums_every_tenant_and_ranks_the_top_ones(two_tenants_window: FleetWindow) -> None:
    slugs = {ALICE_TENANT: "wonderland", MALLORY_TENANT: "evil"}
    snapshot = snapshot_build(scope=DashboardScope(), window=two_tenants_window, tenant_slugs=slugs)
    traffic = snapshot["traffic"]
    assert traffic["requests_per_minute"] == 30 + 110
    assert (traffic["s429"], traffic["s503"]) == (3, 10)
    assert traffic["error_rate"] == round(10 / 140, 4)
    assert snapshot["top_tenants"] == [{"tenant": "evil", "requests": 110}, {"tenant": "wonderland", "requests": 30}]
    assert len(snapshot["series"]["t"]) == 60 and sum(snapshot["series"]["requests"]) == 140
    assert snapshot["fleet"] == {"processes": 1, "in_flight": 3, "pressure": 12.5}


def test_a_tenant_snapshot_holds_its_own_figures_and_nothing_of_another_tenant(two_tenants_window: FleetWindow) -> None:
    scope = DashboardScope(ALICE_TENANT, "wonderland")
    snapshot = snapshot_build(scope=scope, window=two_tenants_window, tenant_slugs={MALLORY_TENANT: "evil"})
    assert snapshot["scope"] == {"tenant": "wonderland"}
    assert snapshot["traffic"]["requests_per_minute"] == 30
    assert (snapshot["traffic"]["s429"], snapshot["traffic"]["s503"]) == (3, 0)
    assert snapshot["top_tenants"] == []
    assert snapshot["top_routes"] == [{"route": "/a/", "requests": 30}]
    assert "evil" not in str(snapshot) and MALLORY_TENANT not in str(snapshot)

"""The gateway's request metrics counted in memory and written by flush (`gateway.metrics.RequestCounts`):
what a scrape shows after a flush is what one `inc()`/`observe()` per request would have written."""

from __future__ import annotations

import threading
import uuid

from prometheus_client import CollectorRegistry, Histogram

from gateway.engine.proxy import Decision, RequestRecord
from gateway.metrics import (
    LATENCY_BUCKETS,
    RequestCounts,
    gateway_decisions,
    http_request_duration,
    http_requests,
    limiter_unavailable,
    ratelimit_rejections,
    slo_requests,
)


def record(
    route: str, *, latency_ms: float, status: int = 200, decision: Decision = "forwarded", **more: object
) -> RequestRecord:
    method = str(more.pop("method", "GET"))
    return RequestRecord(
        correlation_id="c", trace_id="t", route=route, tenant_key="tenant", tier="standard", method=method,
        path=route, status=status, decision=decision, latency_ms=latency_ms, **more,  # type: ignore[arg-type]
    )  # fmt: skip


def samples(metric: object, **labels: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metric's samples in this process whose labels include `labels`."""
    found = {}
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if all(sample.labels.get(name) == value for name, value in labels.items()):
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))
                found[(sample.name, key)] = sample.value
    return found


def test_a_flush_writes_what_observing_each_request_would_have() -> None:
    counts = RequestCounts(slo_ms=200)
    route = f"/counts-{uuid.uuid4().hex[:8]}/"
    # Below the first bound, on a bound (1 ms falls in the 1 ms bucket), between bounds, above the
    # SLO, past the last bound (+Inf).
    latencies = [0.4, 1.0, 3.7, 26.0, 180.0, 250.0, 31_000.0]
    reference = Histogram(
        "sentinel_counts_reference", "", ["route"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry()
    )
    for latency in latencies:
        counts(record(route, latency_ms=latency))
        reference.labels(route).observe(latency / 1000)
    counts(record(route, latency_ms=2.0, status=503, decision="breaker_open", method="BREW"))
    reference.labels(route).observe(0.002)

    # Nothing is written before the flush: a scrape shows what was flushed.
    assert samples(http_request_duration, route=route) == {} or all(
        value == 0 for value in samples(http_request_duration, route=route).values()
    )
    counts.flush()

    written = {
        key: value for key, value in samples(http_request_duration, route=route).items() if "created" not in key[0]
    }
    expected = {
        (name.replace("sentinel_counts_reference", "sentinel_http_request_duration_seconds"), labels): value
        for (name, labels), value in samples(reference, route=route).items()
        if "created" not in name
    }
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(written[key] - value) < 1e-9, key
    requests = samples(http_requests, route=route)
    assert requests[("sentinel_http_requests_total", (("method", "GET"), ("status", "200")))] == len(latencies)
    # An unknown method is counted as "other", so odd methods cannot grow the label set.
    assert requests[("sentinel_http_requests_total", (("method", "other"), ("status", "503")))] == 1


def test_outcomes_decisions_and_limiters_add_up_over_flushes() -> None:
    counts = RequestCounts(slo_ms=100)

    def totals() -> tuple[float, ...]:
        def one(metric: object, **labels: str) -> float:
            return sum(value for (name, _), value in samples(metric, **labels).items() if name.endswith("_total"))

        return (
            one(slo_requests, outcome="good"), one(slo_requests, outcome="slow"), one(slo_requests, outcome="error"),
            one(gateway_decisions, decision="limited"), one(ratelimit_rejections, limiter="local"),
            one(ratelimit_rejections, limiter="distributed"), one(limiter_unavailable),
        )  # fmt: skip

    before = totals()
    counts(record("/a/", latency_ms=5))  # good
    counts(record("/a/", latency_ms=150))  # slow
    counts(record("/a/", latency_ms=5, status=502, decision="upstream_error"))  # error
    counts(record("/a/", latency_ms=1, status=429, decision="limited", reason="burst"))  # good, local
    counts.flush()
    counts(record("/a/", latency_ms=1, status=429, decision="limited", reason="window", limiter_unavailable=True))
    counts.flush()
    counts.flush()  # nothing pending: writes nothing
    after = totals()
    assert tuple(b - a for a, b in zip(before, after, strict=True)) == (3, 1, 1, 2, 1, 1, 1)


def test_counts_from_another_thread_are_not_lost_to_a_flush() -> None:
    counts = RequestCounts(slo_ms=200)
    route = f"/threads-{uuid.uuid4().hex[:8]}/"
    stop = threading.Event()

    def flush_all_the_time() -> None:
        while not stop.is_set():
            counts.flush()

    flusher = threading.Thread(target=flush_all_the_time)
    flusher.start()
    try:
        for _ in range(20_000):
            counts(record(route, latency_ms=3))
    finally:
        stop.set()
        flusher.join()
    counts.flush()
    assert (
        samples(http_requests, route=route)[("sentinel_http_requests_total", (("method", "GET"), ("status", "200")))]
        == 20_000
    )

"""The gateway's Prometheus metrics (SPEC 3): the families, the functions that count into them,
and the breaker-state collector.

Nothing here knows where the counting is wired: the site hands `request_observer()` to the proxy
as its `on_complete` sink and `gateway_gauges_set` to the runtime as its gauge sink, and registers
`BreakerStateCollector` with the `/metrics` view (`sentinel_site/asgi.py`, `sentinel_site/urls.py`).

Each process writes its samples to PROMETHEUS_MULTIPROC_DIR (see `core.prometheus`), so `/metrics`
sums every web process of the host. Gauges say how to combine processes: `livesum` for counts of
things in flight, `livemax` for a fleet-wide reading every process holds. Label values are
bounded by configuration, never taken from a request: routes are a route's path prefix, statuses
are numbers, methods and outcomes are fixed words.

Series known at start exist at zero from the first scrape: every limiter, SLO outcome and decision
(declared below, in every process), and for each active route the statuses the gateway itself
answers (`route_series_declare`, run by the `/metrics` view before each scrape, so a route added
later gets them too).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.conf import sentinel_settings
from core.prometheus import series_declare
from gateway.breaker_state import breaker_states, circuit_sources
from gateway.engine.proxy import Decision, RequestRecord
from gateway.selectors import route_specs, upstream_list

logger = logging.getLogger("sentinel.gateway")

# Seconds; the upper buckets cover the proxy's 30 s default timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The same bounds in milliseconds, the unit of RequestRecord.latency_ms (an observation equal to
# a bound falls in that bound's bucket, as Histogram.observe's `amount <= bound`).
_LATENCY_BOUNDS_MS = tuple(bound * 1000 for bound in LATENCY_BUCKETS)
# How often the runtime writes the in-memory counts to the multiprocess files (RequestCounts).
FLUSH_SECONDS = 0.25

http_requests = Counter(
    "sentinel_http_requests", "HTTP requests answered, by route, method and status.", ["method", "route", "status"]
)
http_request_duration = Histogram(
    "sentinel_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
active_requests = Gauge(
    "sentinel_active_requests", "Proxied requests in flight (sampled every 0.5 s).", multiprocess_mode="livesum"
)
pressure_global = Gauge(
    "sentinel_pressure_global", "Load pressure 0-100 combined over the fleet.", multiprocess_mode="livemax"
)
ratelimit_rejections = Counter(
    "sentinel_ratelimit_rejections",
    "Requests refused by a rate limiter: local (the burst bucket), distributed (the window), unavailable "
    "(the distributed limiter was down and RATE_LIMIT_FAIL_MODE=closed).",
    ["limiter"],
)
slo_requests = Counter(
    "sentinel_slo_requests",
    "Proxied requests against the SLO: good (no 5xx, within SLO_LATENCY_THRESHOLD), slow, or error (5xx).",
    ["outcome"],
)
gateway_decisions = Counter(
    "sentinel_gateway_decisions",
    "Proxied requests by the gateway's decision (forwarded, limited, shed, breaker_open, auth_failed, ...).",
    ["decision"],
)
limiter_unavailable = Counter(
    "sentinel_ratelimit_unavailable",
    "Requests decided without the distributed limiter because Redis did not answer in time.",
)
# sentinel_circuit_breaker_state{upstream} is read from the shared state at scrape time
# (BreakerStateCollector below), not kept per process.

# Anything else is counted as "other", so odd methods cannot grow the label set.
_METHODS = {method: method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
_LIMITER_LABELS = {"burst": "local", "window": "distributed", "limiter_unavailable": "unavailable"}
SLO_OUTCOMES = ("good", "slow", "error")
# Per route, the statuses an alert watches that the gateway answers itself, besides success:
# 401 (auth failed), 429 (limited), 502 and 504 (upstream error, timeout), 503 (shed, breaker open).
ROUTE_STATUSES_AT_START = ("200", "401", "429", "502", "503", "504")

series_declare(ratelimit_rejections, limiter=_LIMITER_LABELS.values())
series_declare(slo_requests, outcome=SLO_OUTCOMES)
series_declare(gateway_decisions, decision=get_args(Decision))


class RequestCounts:
    """The per-request series of one process, counted in memory and written to the multiprocess
    files by `flush` (every `FLUSH_SECONDS` by the gateway runtime, before each scrape the process
    answers, and at shutdown).

    A proxied request used to cost six to eight writes to prometheus_client's memory-mapped files,
    each with a label lookup and a lock (~49 µs a request in bench.gateway's profile). Here it
    costs a few dict updates under one lock; `flush` then writes each series once with the sum of
    its increments, and each histogram bucket once with its count (`Histogram.observe` writes the
    sum and one bucket per observation, so adding the counts gives the same files). What a
    scrape of several processes sees therefore lags by up to `FLUSH_SECONDS` for the processes
    that did not answer it.

    SLO outcome: `error` for any 5xx (the gateway's own 503s included: a shed or an open breaker is
    a failed request to the client), `slow` above `slo_ms` milliseconds, else `good`. A 4xx is the
    client's doing and counts as good.

    Thread-safe: records arrive on the event loop, a scrape's flush runs in Django's worker thread.
    """

    def __init__(self, *, slo_ms: float) -> None:
        self.slo_ms = slo_ms
        self._lock = threading.Lock()
        self._pending = _Pending()

    def __call__(self, record: RequestRecord) -> None:
        """Counts one proxied request (the proxy's `on_complete` sink; on the event loop)."""
        route = record.route or "unmatched"
        latency_ms = record.latency_ms
        if record.status >= 500:
            slo = "error"
        elif latency_ms > self.slo_ms:
            slo = "slow"
        else:
            slo = "good"
        requests_key = (_METHODS.get(record.method, "other"), route, record.status)
        bucket = bisect.bisect_left(_LATENCY_BOUNDS_MS, latency_ms)
        limiter = _LIMITER_LABELS.get(record.reason)
        with self._lock:
            pending = self._pending
            pending.requests[requests_key] = pending.requests.get(requests_key, 0) + 1
            durations = pending.durations.get(route)
            if durations is None:
                durations = pending.durations[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            durations[bucket] += 1
            durations[-1] += latency_ms
            pending.decisions[record.decision] = pending.decisions.get(record.decision, 0) + 1
            pending.slo[slo] = pending.slo.get(slo, 0) + 1
            if limiter is not None:
                pending.limiters[limiter] = pending.limiters.get(limiter, 0) + 1
            if record.limiter_unavailable:
                pending.limiter_unavailable += 1

    def flush(self) -> None:
        """Writes what was counted since the last flush to the metrics (their multiprocess files)."""
        with self._lock:
            pending, self._pending = self._pending, _Pending()
        for (method, route, status), count in pending.requests.items():
            http_requests.labels(method, route, str(status)).inc(count)
        for route, counts in pending.durations.items():
            histogram = http_request_duration.labels(route)
            # prometheus_client keeps a histogram as one value per bucket (not cumulative) and its
            # sum: what observe() increments. Pinned version; a test compares with observe().
            for bucket, observations in zip(histogram._buckets, counts, strict=False):
                if observations:
                    bucket.inc(observations)
            histogram._sum.inc(counts[-1] / 1000)
        for decision, count in pending.decisions.items():
            gateway_decisions.labels(decision).inc(count)
        for outcome, count in pending.slo.items():
            slo_requests.labels(outcome).inc(count)
        for limiter, count in pending.limiters.items():
            ratelimit_rejections.labels(limiter).inc(count)
        if pending.limiter_unavailable:
            limiter_unavailable.inc(pending.limiter_unavailable)


class _Pending:
    """What a `RequestCounts` counted since its last flush."""

    __slots__ = ("decisions", "durations", "limiter_unavailable", "limiters", "requests", "slo")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # route -> a count per latency bucket (LATENCY_BUCKETS, then +Inf), then the sum in ms
        self.durations: dict[str, list[float]] = {}
        self.decisions: dict[str, int] = {}
        self.slo: dict[str, int] = {}
        self.limiters: dict[str, int] = {}
        self.limiter_unavailable = 0


# The process's counts: the proxy's sink (`request_observer`), flushed by the runtime and the
# /metrics view (`request_counts_flush`).
_counts: RequestCounts | None = None


def request_observer() -> RequestCounts:
    """This process's `RequestCounts`, with the SLO of the settings (SLO_LATENCY_THRESHOLD, ms):
    the sink the site hands to the proxy as `on_complete`."""
    global _counts
    if _counts is None:
        _counts = RequestCounts(slo_ms=sentinel_settings.gateway.SLO_LATENCY_THRESHOLD)
    return _counts


def request_counts_flush() -> None:
    """Writes this process's pending counts, if it counts any (the runtime's tick, the /metrics
    view before a scrape, shutdown)."""
    if _counts is not None:
        _counts.flush()


def gateway_gauges_set(*, in_flight: int, pressure: float) -> None:
    """This process's sampled gauges: requests in flight, and pressure 0-100 (the runtime's gauge
    sink, called every refresh tick)."""
    active_requests.set(in_flight)
    pressure_global.set(pressure)


def _method(method: str) -> str:
    return _METHODS.get(method, "other")


def route_series_declare() -> None:
    """Creates at zero, for every active route, `sentinel_http_requests_total` for the statuses of
    `ROUTE_STATUSES_AT_START` (method GET, or the route's first allowed method when it refuses GET)
    and its `sentinel_http_request_duration_seconds`: so `rate()` and alerts on a route work before
    its first request. Run by the `/metrics` view before each scrape (two queries): routes are
    configuration that changes while a process runs. A database error leaves the series as they are.
    """
    try:
        routes = route_specs()
    except Exception:  # a scrape must still answer when the database is down
        logger.warning("routes unavailable for /metrics", exc_info=True)
        return
    for route in routes:
        method = "GET" if route.allows_method("GET") else _method(min(route.methods))
        series_declare(http_requests, method=(method,), route=(route.path_prefix,), status=ROUTE_STATUSES_AT_START)
        http_request_duration.labels(route.path_prefix)


class BreakerStateCollector(Collector):
    """`sentinel_circuit_breaker_state{upstream}`: 0 closed, 1 open, 2 half-open, for every upstream
    URL and every breaker of SENTINEL_CIRCUIT_SOURCES (by its name: `fraud-brain`).

    A breaker's state is fleet-wide (Redis in production), so every process would report the
    same figure; reading it once per scrape is exact and costs the proxy nothing. The site
    registers it with the `/metrics` view.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sentinel_circuit_breaker_state",
            "Circuit breaker state per upstream target: 0 closed, 1 open, 2 half-open.",
            labels=["upstream"],
        )
        try:
            urls = list(upstream_list().values_list("url", flat=True))
            states = breaker_states(urls) if urls else {}
        except Exception:  # a scrape must still answer when Redis is down: the family stays empty
            logger.warning("breaker states unavailable for /metrics", exc_info=True)
            states = {}
        for url in sorted(states):
            family.add_metric([url], states[url]["state_code"])
        # The other breakers (the fraud brain's, labelled by name: "fraud-brain").
        for source in circuit_sources():
            try:
                entries = source.entries(is_staff=True)
            except Exception:  # as above: Redis down leaves these out, the scrape still answers
                logger.warning("breaker states unavailable for /metrics", exc_info=True)
                continue
            for entry in entries:
                family.add_metric([entry["name"]], entry["state_code"])
        yield family

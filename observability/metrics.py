"""Sentinel's own Prometheus metrics (SPEC 3), declared once for every app.

The process writes them to PROMETHEUS_MULTIPROC_DIR (see `core.prometheus`), so
`/metrics` sums every web and worker process of the host. Gauges say how to combine processes:
`livesum` for counts of things in flight, `livemax` for a fleet-wide reading every process holds.

Label values are bounded by configuration, never taken from a request: routes are a route's
path prefix (or Django's URL pattern), statuses are numbers, outcomes are fixed words.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds; the upper buckets cover the proxy's 30 s default timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- Gateway and API traffic -------------------------------------------------------------------
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
# (observability.collectors), not kept per process.

# --- Request log -------------------------------------------------------------------------------
log_dropped = Counter("sentinel_log_dropped", "Request-log rows dropped (queue full or unwritable).")

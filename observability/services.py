"""Writes of the observability app."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from observability import metrics
from observability.models import Heartbeat

if TYPE_CHECKING:
    from gateway.engine.proxy import RequestRecord

WORKER_HEARTBEAT = "worker"


def heartbeat_record(*, name: str = WORKER_HEARTBEAT, at: datetime) -> Heartbeat:
    heartbeat, _ = Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": at})
    return heartbeat


# --- Traffic: the proxy's and Django's requests, into the metrics -----------------------------

# Anything else is counted as "other", so odd methods cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LIMITER_LABELS = {"burst": "local", "window": "distributed", "limiter_unavailable": "unavailable"}


def request_observe(record: RequestRecord, *, slo_ms: float) -> None:
    """Counts one proxied request (the proxy's `on_complete`; runs on the event loop, so cheap).

    SLO outcome: `error` for any 5xx (the gateway's own 503s included: a shed or an open breaker
    is a failed request to the client), `slow` above the latency threshold, else `good`. A 4xx is
    the client's doing and counts as good.
    """
    route = record.route or "unmatched"
    metrics.http_requests.labels(_method(record.method), route, str(record.status)).inc()
    metrics.http_request_duration.labels(route).observe(record.latency_ms / 1000)
    metrics.gateway_decisions.labels(record.decision).inc()
    if record.status >= 500:
        metrics.slo_requests.labels("error").inc()
    elif record.latency_ms > slo_ms:
        metrics.slo_requests.labels("slow").inc()
    else:
        metrics.slo_requests.labels("good").inc()
    limiter = _LIMITER_LABELS.get(record.reason)
    if limiter is not None:
        metrics.ratelimit_rejections.labels(limiter).inc()
    if record.limiter_unavailable:
        metrics.limiter_unavailable.inc()


def gateway_gauges_set(*, in_flight: int, pressure: float) -> None:
    """This process's sampled gauges (the gateway runtime calls it every refresh tick)."""
    metrics.active_requests.set(in_flight)
    metrics.pressure_global.set(pressure)


def _method(method: str) -> str:
    return method if method in _METHODS else "other"

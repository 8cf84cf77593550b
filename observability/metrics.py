"""Prometheus metrics (SPEC 3) of observability itself: the request log's.

Each app declares its own metrics next to its code (the gateway's in `gateway/metrics.py`, the rules
engine's in `rules/metrics.py`). The process writes them to PROMETHEUS_MULTIPROC_DIR (see
`core.prometheus`), so `/metrics` sums every web and worker process of the host. Label values are
fixed words, never taken from a request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# What the request log could not keep: past its memory bound during a database outage, left
# unwritten when a stopping process ran out of time, or refused by the database as invalid.
log_dropped = Counter("sentinel_log_dropped", "Request-log rows dropped (queue full or unwritable).")
log_written = Counter("sentinel_log_written", "Request-log rows written to the database.")
# Rows held in memory waiting for the database (queued, or in a batch being retried), summed over
# the live processes: it grows during an outage and drains after it.
log_queue_rows = Gauge(
    "sentinel_log_queue_rows", "Request-log rows waiting to be written.", multiprocess_mode="livesum"
)

"""Prometheus metrics (SPEC 3) of observability itself: the request log's.

Each app declares its own metrics next to its code (the gateway's in `gateway/metrics.py`, the rules
engine's in `rules/metrics.py`). The process writes them to PROMETHEUS_MULTIPROC_DIR (see
`core.prometheus`), so `/metrics` sums every web and worker process of the host. Label values are
fixed words, never taken from a request.
"""

from __future__ import annotations

from prometheus_client import Counter

# What the request log could not keep (the log itself is not built yet).
log_dropped = Counter("sentinel_log_dropped", "Request-log rows dropped (queue full or unwritable).")

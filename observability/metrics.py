"""Prometheus metrics (SPEC 3) of the request log and of the rules engine.

Each app declares its own metrics next to its code (the gateway's: `gateway/metrics.py`). The
process writes them to PROMETHEUS_MULTIPROC_DIR (see `core.prometheus`), so `/metrics` sums every
web and worker process of the host. Label values are fixed words, never taken from a request.
"""

from __future__ import annotations

from prometheus_client import Counter

# --- Request log -------------------------------------------------------------------------------
log_dropped = Counter("sentinel_log_dropped", "Request-log rows dropped (queue full or unwritable).")

"""The monitors app's Prometheus metrics (SPEC 5), declared before the checks that will count them.

Written to PROMETHEUS_MULTIPROC_DIR like every metric of the site (``core.prometheus``), by the
worker processes that run checks. Label values are fixed words; every series below exists at
zero from the first scrape, whether or not a check has run yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.prometheus import series_declare
from monitors.models import MonitorState
from monitors.status import certificate_days_remaining, fleet_state_counts

# A check's outcome as the monitor's state machine reads it, before thresholds: up or down.
CHECK_OUTCOMES = ("up", "down")
# Seconds; a check's timeout_seconds defaults well under the top bucket.
CHECK_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# sentinel_checks_total{outcome}: one per check run.
checks = Counter("sentinel_checks", "Monitor checks run, by outcome (up or down).", ["outcome"])
# sentinel_latency_seconds: how long a check's target took to answer (connect to last byte).
check_latency = Histogram(
    "sentinel_latency_seconds", "Response time of monitor checks' targets.", buckets=CHECK_LATENCY_BUCKETS
)
series_declare(checks, outcome=CHECK_OUTCOMES)

logger = logging.getLogger(__name__)


class MonitorsUpCollector(Collector):
    """The monitors' fleet-wide gauges, read from the database at scrape time:

    * `sentinel_monitors_up` and `sentinel_monitors_down`: enabled monitors up, down (one query);
    * `sentinel_monitor_certificate_days_remaining{monitor_id, tenant}`: days (fractional,
      negative once expired) until the TLS certificate an enabled monitor last saw expires (one
      query). Per monitor, like blackbox_exporter's `probe_ssl_earliest_cert_expiry` and Uptime
      Kuma's `monitor_cert_days_remaining`: an aggregate (the fleet's minimum) would say that
      something expires, not what; one series per https monitor is bounded by the monitors
      themselves. Days rather than an expiry timestamp so that an alert reads `< 14`.

    Gauges set by the processes that run checks would report a stale or restarted process's
    value; counting at scrape time is exact. The site registers it with the `/metrics` view.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("sentinel_monitors_up", "Enabled monitors currently up.")
        down = GaugeMetricFamily("sentinel_monitors_down", "Enabled monitors currently down.")
        certificates = GaugeMetricFamily(
            "sentinel_monitor_certificate_days_remaining",
            "Days until the TLS certificate an enabled monitor's target last presented expires.",
            labels=["monitor_id", "tenant"],
        )
        try:
            counts = fleet_state_counts()
            expiries = certificate_days_remaining()
        except DatabaseError:
            # A scrape must still answer (every process's own metrics) with the database down: the
            # families stay empty, which `absent()` alerts on, rather than reading 0 monitors down.
            logger.warning("monitor states unavailable for /metrics", exc_info=True)
        else:
            up.add_metric([], counts[MonitorState.UP])
            down.add_metric([], counts[MonitorState.DOWN])
            for monitor_id, tenant, days in expiries:
                certificates.add_metric([str(monitor_id), tenant], round(days, 3))
        yield up
        yield down
        yield certificates

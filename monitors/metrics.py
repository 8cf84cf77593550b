"""The monitors app's Prometheus metrics (SPEC 5), declared before the checks that will count them.

Written to PROMETHEUS_MULTIPROC_DIR like every metric of the site (``core.prometheus``), by the
worker processes that run checks. Label values are fixed words; every series below exists at
zero from the first scrape, whether or not a check has run yet.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.prometheus import series_declare

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


def monitors_up_count() -> int:
    """Enabled monitors whose state is up. No monitor exists before the monitors app's models land
    (SPEC 5), so none is up; that issue replaces this body with its selector."""
    return 0


class MonitorsUpCollector(Collector):
    """`sentinel_monitors_up`: enabled monitors currently up, read at scrape time.

    A fleet-wide figure, like the breaker states: a gauge set by the processes that run checks would
    report a stale or restarted process's value; counting at scrape time is exact. The site
    registers it with the `/metrics` view.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("sentinel_monitors_up", "Enabled monitors currently up.", value=monitors_up_count())

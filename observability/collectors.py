"""Metrics read from shared state when Prometheus scrapes, rather than kept by each process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.breakers import breaker_states
from gateway.selectors import upstream_list

logger = logging.getLogger("sentinel.observability")


class BreakerStateCollector(Collector):
    """`sentinel_circuit_breaker_state{upstream}`: 0 closed, 1 open, 2 half-open.

    A breaker's state is fleet-wide (Redis in production), so every process would report the
    same figure; reading it once per scrape is exact and costs the proxy nothing.
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
        yield family

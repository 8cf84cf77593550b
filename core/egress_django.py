"""The egress policy as Django runs it: built from settings, and every refusal logged and counted.

``core.egress`` is plain Python (the gateway engine uses it); this module adds what needs Django's
settings and the process's metrics. Callers: the route and channel services (stage ``save``), the
gateway runtime and the notifiers (stage ``connect``).
"""

from __future__ import annotations

import logging
from typing import Literal

from django.conf import settings
from prometheus_client import Counter

from core.egress import EgressDenied, EgressPolicy

__all__ = ["egress_policy", "egress_refusal_record", "egress_refusals"]

logger = logging.getLogger("sentinel.egress")

Kind = Literal["route", "channel", "monitor"]
Stage = Literal["save", "connect"]

# Declared here, next to the one function that counts it; multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
# core.prometheus) sums it over every web and worker process like the others.
egress_refusals = Counter(
    "sentinel_egress_refusals",
    "Tenant-configured targets refused by the egress policy, by object kind (route, channel, monitor) and "
    "stage (save: the object was refused; connect: a connection was).",
    ["kind", "stage"],
)


def egress_policy() -> EgressPolicy:
    """The policy of the current settings (EGRESS_ALLOWED_NETWORKS, EGRESS_ALLOW_LOOPBACK).

    Built on each call: a few microseconds, and settings overridden in tests take effect at once."""
    return EgressPolicy.from_strings(settings.EGRESS_ALLOWED_NETWORKS, allow_loopback=settings.EGRESS_ALLOW_LOOPBACK)


def egress_refusal_record(*, kind: Kind, stage: Stage, tenant: str | None, target: str, denied: EgressDenied) -> None:
    """One JSON log line (tenant, kind, stage, target, address, reason: the rule) and one count of the metric."""
    egress_refusals.labels(kind, stage).inc()
    logger.warning(
        "egress refused",
        extra={
            "tenant": tenant,
            "kind": kind,
            "stage": stage,
            "target": target,
            "address": denied.address,
            "reason": denied.rule,
        },
    )

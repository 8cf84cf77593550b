"""The fraud app's Prometheus metrics (SPEC 6), declared before the scoring code that will count them.

Written to PROMETHEUS_MULTIPROC_DIR like every metric of the site (``core.prometheus``), by the
web processes that score transactions. Label values are fixed words; every series below exists at
zero from the first scrape, whether or not a transaction has been scored yet.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from core.prometheus import series_declare
from fraud.engine.admission import REASONS
from gateway.engine.proxy import TIER_FACTORS

# SPEC 6: a tenant's thresholds turn a score into one of these.
DECISIONS = ("approve", "review", "decline")

# sentinel_fraud_decisions_total{decision}: one per transaction decided (fail-open approvals included).
fraud_decisions = Counter("sentinel_fraud_decisions", "Transactions decided, by decision.", ["decision"])
# sentinel_fraud_fail_open_total: approvals given without a score (brain down, late or breaker open).
fraud_fail_open = Counter(
    "sentinel_fraud_fail_open", "Transactions approved unscored because the brain did not answer in time."
)

series_declare(fraud_decisions, decision=DECISIONS)

# sentinel_fraud_brain_latency_seconds{outcome}: the brain's Score calls as the web process saw
# them, outcome "ok" or a fail-open code (breaker_open at 0 s: refused without a call). Buckets
# around the 40 ms deadline: the brain answers in a few ms, a timeout lands at the deadline.
BRAIN_OUTCOMES = ("ok", "brain_timeout", "brain_unavailable", "brain_error", "breaker_open")
fraud_brain_latency = Histogram(
    "sentinel_fraud_brain_latency_seconds",
    "Latency of the fraud brain's Score calls from the web process, by outcome.",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0),
)
# sentinel_fraud_breaker_unavailable_total: calls made without the breaker because Redis did not answer.
fraud_breaker_unavailable = Counter(
    "sentinel_fraud_breaker_unavailable", "Brain calls made unprotected because the breaker's Redis did not answer."
)

series_declare(fraud_brain_latency, outcome=BRAIN_OUTCOMES)


def brain_latency_observe(outcome: str, seconds: float) -> None:
    fraud_brain_latency.labels(outcome=outcome).observe(seconds)


# sentinel_fraud_refusals_total{reason,tier}: transactions refused before scoring by the per-tenant
# admission (fraud.engine.admission): reason "burst" (429, the tenant's bucket is empty) or "shed"
# (503, pressure over its tier's threshold). Neither scored nor recorded: the client retries.
fraud_refusals = Counter(
    "sentinel_fraud_refusals",
    "Transactions refused before scoring, by reason (burst: 429, shed: 503) and tenant tier.",
    ["reason", "tier"],
)

series_declare(fraud_refusals, reason=REASONS, tier=TIER_FACTORS)


def refusal_count(reason: str, tier: str) -> None:
    fraud_refusals.labels(reason=reason, tier=tier).inc()

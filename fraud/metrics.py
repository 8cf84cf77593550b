"""The fraud app's Prometheus metrics (SPEC 6), declared before the scoring code that will count them.

Written to PROMETHEUS_MULTIPROC_DIR like every metric of the site (``core.prometheus``), by the
web processes that score transactions. Label values are fixed words; every series below exists at
zero from the first scrape, whether or not a transaction has been scored yet.
"""

from __future__ import annotations

from prometheus_client import Counter

from core.prometheus import series_declare

# SPEC 6: a tenant's thresholds turn a score into one of these.
DECISIONS = ("approve", "review", "decline")

# sentinel_fraud_decisions_total{decision}: one per transaction decided (fail-open approvals included).
fraud_decisions = Counter("sentinel_fraud_decisions", "Transactions decided, by decision.", ["decision"])
# sentinel_fraud_fail_open_total: approvals given without a score (brain down, late or breaker open).
fraud_fail_open = Counter(
    "sentinel_fraud_fail_open", "Transactions approved unscored because the brain did not answer in time."
)

series_declare(fraud_decisions, decision=DECISIONS)

"""The brain process's Prometheus metrics (SPEC 6).

The brain is started by `manage.py run_brain`, so Django's setup has pointed prometheus_client at
PROMETHEUS_MULTIPROC_DIR (core.prometheus) before this module is imported: its samples land in the
folder the web's `/metrics` reads, and on one host the web reports the brain's figures too.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

# How a transaction's scoring ended: answered, refused as bad input, failed on purpose (fault
# injection), refused while the model loads, or failed on a bug (logged with its traceback). Counted
# per transaction, a ScoreMany's each by its own outcome; when the whole call is refused (a batch
# of over 256 is "invalid"), each of its transactions by the call's.
OUTCOMES: Final = ("ok", "invalid", "injected_failure", "not_ready", "error")

# sentinel_fraud_brain_requests_total{outcome}
brain_requests = Counter(
    "sentinel_fraud_brain_requests",
    "Transactions the fraud brain was asked to score (Score: one, ScoreMany: each of its batch), by outcome.",
    ["outcome"],
)
# sentinel_fraud_brain_score_seconds: a Score or ScoreMany call from receipt to answer, injected
# delays included (so a drill's slowness shows), once per call whatever its batch's size (so
# requests_total over this count is the mean batch); buckets from 0.5 ms, the scoring of one
# transaction taking ~0.05-0.3 ms.
brain_score_seconds = Histogram(
    "sentinel_fraud_brain_score_seconds",
    "Time the fraud brain took to answer a Score or ScoreMany call (one observation per call, whatever its size).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

for _outcome in OUTCOMES:
    brain_requests.labels(outcome=_outcome)  # every series at zero from the first scrape

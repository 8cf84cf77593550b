"""The rules app's Prometheus metrics (SPEC 3), declared next to the code that counts them.

Written to PROMETHEUS_MULTIPROC_DIR like every metric of the site (``core.prometheus``), so
``/metrics`` sums the web processes that ingest events and the workers that evaluate and deliver
them. Label values are fixed words: a channel kind (``ChannelKind``) and an outcome; every
combination exists at zero from the first scrape (``core.prometheus.series_declare``).
"""

from __future__ import annotations

from prometheus_client import Counter

from core.prometheus import series_declare
from rules.models import ChannelKind

# What `delivery_attempt` records per attempt: delivered, failed (retried), dead (given up).
NOTIFICATION_OUTCOMES = ("sent", "failed", "dead")

# events_ingested_total: events stored by `event_ingest`, whatever their source.
events_ingested = Counter("events_ingested", "Events stored for rule evaluation.")
# rules_triggered_total: rule matches recorded by `match_record`.
rules_triggered = Counter("rules_triggered", "Rule matches (including those within a cooldown).")
# notifications_sent_total{channel, outcome}: one per send attempt of `delivery_attempt`.
notifications_sent = Counter(
    "notifications_sent",
    "Notification attempts by channel kind and outcome (sent, failed, dead).",
    ["channel", "outcome"],
)
series_declare(notifications_sent, channel=ChannelKind.values, outcome=NOTIFICATION_OUTCOMES)

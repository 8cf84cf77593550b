"""Writes of the observability app, one module per job: ``heartbeat`` (the worker's proof of
life), ``request_log`` (partitions, retention, the bulk insert), ``incidents`` (the insight
engine's incidents and their events), ``insight`` (one analysis period). Callers import from here:
``from observability import services`` or ``from observability.services import x``."""

from __future__ import annotations

from observability.services.heartbeat import WORKER_HEARTBEAT, heartbeat_record
from observability.services.incidents import (
    incident_acknowledge,
    incident_event,
    incident_observe,
    incident_resolve,
    incidents_resolve_quiet,
)
from observability.services.insight import AnalysisReport, insight_analyse_run, insight_claim
from observability.services.request_log import (
    RetentionReport,
    request_log_partitions_drop,
    request_log_partitions_ensure,
    request_log_purge,
    request_log_retention,
    request_log_rows_insert,
)

__all__ = [
    "WORKER_HEARTBEAT",
    "AnalysisReport",
    "RetentionReport",
    "heartbeat_record",
    "incident_acknowledge",
    "incident_event",
    "incident_observe",
    "incident_resolve",
    "incidents_resolve_quiet",
    "insight_analyse_run",
    "insight_claim",
    "request_log_partitions_drop",
    "request_log_partitions_ensure",
    "request_log_purge",
    "request_log_retention",
    "request_log_rows_insert",
]

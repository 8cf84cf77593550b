"""Writes of the observability app, one module per job: ``heartbeat`` (the worker's proof of
life), ``incidents`` (the insight engine's incidents and their events), ``insight`` (one analysis
period); the request log and the dashboard's snapshot come in their own modules. Callers import
from here: ``from observability import services`` or ``from observability.services import x``."""

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

__all__ = [
    "WORKER_HEARTBEAT",
    "AnalysisReport",
    "heartbeat_record",
    "incident_acknowledge",
    "incident_event",
    "incident_observe",
    "incident_resolve",
    "incidents_resolve_quiet",
    "insight_analyse_run",
    "insight_claim",
]

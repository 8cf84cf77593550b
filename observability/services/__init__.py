"""Writes of the observability app, one module per job: ``heartbeat`` (the worker's proof of
life); the request log, incidents and the dashboard's snapshot come in their own modules. Callers
import from here: ``from observability import services`` or ``from observability.services import x``."""

from __future__ import annotations

from observability.services.heartbeat import WORKER_HEARTBEAT, heartbeat_record

__all__ = ["WORKER_HEARTBEAT", "heartbeat_record"]

"""Writes of the observability app, one module per job: ``heartbeat`` (the worker's proof of
life), ``request_log`` (partitions, retention, the bulk insert); incidents and the dashboard's
snapshot come in their own modules. Callers import from here: ``from observability import
services`` or ``from observability.services import x``."""

from __future__ import annotations

from observability.services.heartbeat import WORKER_HEARTBEAT, heartbeat_record
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
    "RetentionReport",
    "heartbeat_record",
    "request_log_partitions_drop",
    "request_log_partitions_ensure",
    "request_log_purge",
    "request_log_retention",
    "request_log_rows_insert",
]

"""Structured logging: one JSON object a line, with the correlation id of the current request."""

from __future__ import annotations

import json
import logging
import logging.config
import traceback
from datetime import UTC, datetime
from typing import Any

from core.correlation import current_correlation_id

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "correlation_id",
    "color_message",  # uvicorn's terminal-coloured copy of the message
}


class CorrelationIdFilter(logging.Filter):
    """Stamps each record with the correlation id of the request or task that logged it.

    The context variable holds it while the middleware chain runs. Django writes its
    ``django.request`` lines ("Not Found: ...", "Bad Request: ...") after the chain has returned
    and the variable is reset, but passes the request as ``extra={"request": ...}``: the id the
    correlation middleware put on that request is taken from there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            record.correlation_id = current_correlation_id.get() or getattr(
                getattr(record, "request", None), "correlation_id", None
            )
        return True


class RoutineTaskFilter(logging.Filter):
    """Drops Celery's info lines about routine tasks (received, succeeded, beat's "Sending due
    task") unless the level is debug: a task every second (the monitors' dispatcher, and the
    check batches it queues) would otherwise be three lines a second, scrolling the first-run
    banner away and burying the lines that matter. Their warnings and errors (a failure, a retry)
    always pass; `tasks` are the task names (settings LOGGING, ``ROUTINE_TASKS``)."""

    def __init__(self, tasks: list[str] | tuple[str, ...] = (), keep_below_warning: bool = False) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.keep = keep_below_warning

    def filter(self, record: logging.LogRecord) -> bool:
        if self.keep or record.levelno >= logging.WARNING or not record.name.startswith("celery"):
            return True
        message = record.getMessage()
        return not any(task in message for task in self.tasks)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        correlation_id = getattr(record, "correlation_id", None)
        if correlation_id:
            entry["correlation_id"] = correlation_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_configure(config: dict[str, Any]) -> None:
    """Django's ``LOGGING_CONFIG`` callable: ``dictConfig(LOGGING)``, then Python warnings routed
    through logging (logger ``py.warnings``), so a ``warnings.warn`` anywhere becomes a JSON line
    instead of plain text on stderr (Django's default callable leaves warnings alone)."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)

"""The routine-task filter: Celery's info lines about a per-second task are dropped, the rest kept."""

from __future__ import annotations

import logging

import pytest

from core.jsonlog import RoutineTaskFilter

DISPATCH = "monitors.tasks.checks_dispatch"


def record(name: str, level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args or None, None)


@pytest.mark.parametrize(
    ("kept", "line"),
    [
        (
            False,
            record("celery.beat", logging.INFO, "Scheduler: Sending due task %s (%s)", "monitors-dispatch", DISPATCH),
        ),
        (False, record("celery.worker.strategy", logging.INFO, f"Task {DISPATCH}[1f0c] received")),
        (False, record("celery.app.trace", logging.INFO, f"Task {DISPATCH}[1f0c] succeeded in 0.004s: 3")),
        # A failure of the same task, another task, and Sentinel's own lines pass.
        (True, record("celery.app.trace", logging.ERROR, f"Task {DISPATCH}[1f0c] raised unexpected: OperationalError")),
        (True, record("celery.app.trace", logging.INFO, "Task rules.tasks.events_evaluate[9a] succeeded in 0.01s")),
        (True, record("sentinel.monitors", logging.INFO, f"{DISPATCH} claimed 3")),
    ],
)
def test_routine_task_info_lines_are_dropped_and_everything_else_kept(kept: bool, line: logging.LogRecord) -> None:
    assert RoutineTaskFilter(tasks=[DISPATCH]).filter(line) is kept


def test_at_debug_level_every_line_is_kept() -> None:
    line = record("celery.app.trace", logging.INFO, f"Task {DISPATCH}[1f0c] succeeded in 0.004s: 3")

    assert RoutineTaskFilter(tasks=[DISPATCH], keep_below_warning=True).filter(line) is True

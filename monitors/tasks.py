"""Celery tasks of the monitors app: thin adapters that take ids and run one service (CONVENTIONS 7)."""

from __future__ import annotations

from collections.abc import Iterable

from celery import shared_task

# --- scheduling and checks (the scheduler part) ----------------------------------------------------


# --- alerts (the alerts part) ------------------------------------------------------------------------
#
# Kept below the scheduling tasks: the two parts of issue 11 are written side by side.


@shared_task(name="monitors.tasks.flip_alert", acks_late=True, reject_on_worker_lost=True)
def flip_alert(flip_id: int) -> str:
    """Claims one flip and sends its alert (filled by the alerts part)."""
    return "not-built"


def flips_alert_enqueue(flip_ids: Iterable[int]) -> None:
    """Queues ``flip_alert`` for each flip id; called once the flips are committed."""
    for flip_id in flip_ids:
        flip_alert.delay(flip_id)

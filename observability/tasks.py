"""Background jobs of the observability app."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from observability.services import heartbeat_record, insight_analyse_run


@shared_task(name="observability.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Proves beat, the broker and a worker all work: `/health` shows the age of the last one."""
    heartbeat_record(at=timezone.now())


@shared_task(name="observability.tasks.insight_analyse", ignore_result=True, soft_time_limit=50, time_limit=60)
def insight_analyse() -> None:
    """The insight engine's analysis of the last window (beat, every INSIGHT_PERIOD_SECONDS).
    Safe to run twice: a second run in the same period finds it claimed and does nothing."""
    insight_analyse_run()

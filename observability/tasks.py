"""Background jobs of the observability app."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from observability.services import heartbeat_record


@shared_task(name="observability.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Proves beat, the broker and a worker all work: `/health` shows the age of the last one."""
    heartbeat_record(at=timezone.now())

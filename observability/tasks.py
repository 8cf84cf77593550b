"""Background jobs of the observability app."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from observability.services import heartbeat_record, insight_analyse_run
from observability.services import request_log_retention as request_log_retention_service

logger = logging.getLogger("sentinel.request_log")


@shared_task(name="observability.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Proves beat, the broker and a worker all work: `/health` shows the age of the last one."""
    heartbeat_record(at=timezone.now())


@shared_task(name="observability.tasks.request_log_retention", ignore_result=True)
def request_log_retention() -> None:
    """Drops the request log past REQUEST_LOG_RETENTION_DAYS and makes the coming days'
    partitions (hourly from beat; running it twice does nothing more)."""
    report = request_log_retention_service()
    if report.created or report.dropped or report.deleted_rows:
        logger.info(
            "request log retention",
            extra={"created": report.created, "dropped": report.dropped, "deleted_rows": report.deleted_rows},
        )


@shared_task(name="observability.tasks.insight_analyse", ignore_result=True, soft_time_limit=50, time_limit=60)
def insight_analyse() -> None:
    """The insight engine's analysis of the last window (beat, every INSIGHT_PERIOD_SECONDS).
    Safe to run twice: a second run in the same period finds it claimed and does nothing."""
    insight_analyse_run()

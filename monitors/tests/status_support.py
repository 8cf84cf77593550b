"""Monitors and roll-ups as the scheduler would have left them, for the status page's tests.

The run state (`state`, `last_reason`, roll-ups) is the scheduler's to write; these tests read
it, so they set it as it would be, with the ORM, rather than running checks for 90 days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from accounts.models import Tenant
from monitors.models import Monitor, MonitorRollup, RollupPeriod


def today() -> datetime:
    return timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def monitor(tenant: Tenant, name: str, **fields: Any) -> Monitor:
    fields.setdefault("target", f"https://internal-{name.lower().replace(' ', '-')}.corp.example/health")
    fields.setdefault("published", True)
    return Monitor.objects.create(tenant=tenant, name=name, **fields)


def day_rollup(target: Monitor, days_ago: int, checks: int, failures: int) -> MonitorRollup:
    """The daily roll-up of `days_ago` UTC days before today (0: today)."""
    return MonitorRollup.objects.create(
        monitor=target,
        period=RollupPeriod.DAY,
        bucket=today() - timedelta(days=days_ago),
        checks=checks,
        failures=failures,
    )


def hour_rollup(target: Monitor, hours_ago: int, checks: int, failures: int) -> MonitorRollup:
    """The hourly roll-up of `hours_ago` hours before the current hour (0: this hour)."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)
    return MonitorRollup.objects.create(
        monitor=target, period=RollupPeriod.HOUR, bucket=hour, checks=checks, failures=failures
    )


def forget_status_pages() -> None:
    """Drops the status pages' cached answers: on Redis the test run's cache outlives a test, and
    every test's tenant has the same slug."""
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("monitors:status:*")  # only these keys, never the whole Redis DB
    else:
        cache.clear()

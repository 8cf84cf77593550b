"""Maintenance windows (monitors.maintenance): once and weekly, start inclusive, end exclusive,
weekly by wall time across DST, windows crossing midnight and Sunday → Monday, scoped to a
monitor or its whole tenant, never another tenant's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Tenant
from monitors.maintenance import monitors_in_maintenance
from monitors.models import MaintenanceWindow, Monitor, Recurrence

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, zone: ZoneInfo | None = None) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone or UTC)


def monitor(tenant: Tenant, name: str = "shop") -> Monitor:
    return Monitor.objects.create(tenant=tenant, name=name, target="https://shop.example/health")


def window(
    tenant: Tenant,
    starts_at: datetime,
    minutes: int,
    *,
    on: Monitor | None = None,
    weekly: bool = False,
    zone: str = "UTC",
) -> MaintenanceWindow:
    return MaintenanceWindow.objects.create(
        tenant=tenant,
        monitor=on,
        name="upgrade",
        starts_at=starts_at,
        duration_minutes=minutes,
        recurrence=Recurrence.WEEKLY if weekly else Recurrence.ONCE,
        timezone=zone,
    )


def inside(m: Monitor, now: datetime) -> bool:
    return m.pk in monitors_in_maintenance(monitors=[(m.pk, m.tenant_id)], now=now)


def test_a_one_off_window_is_open_from_its_start_inclusive_to_its_end_exclusive(tenant_a: Tenant) -> None:
    shop = monitor(tenant_a)
    window(tenant_a, at(2026, 3, 2, 10), 30, on=shop)

    assert not inside(shop, at(2026, 3, 2, 9, 59))
    assert inside(shop, at(2026, 3, 2, 10))
    assert inside(shop, at(2026, 3, 2, 10, 29))
    assert not inside(shop, at(2026, 3, 2, 10, 30))
    # Once means once: not the next week.
    assert not inside(shop, at(2026, 3, 9, 10, 5))


def test_a_weekly_window_recurs_on_the_same_weekday_and_not_before_its_first_start(tenant_a: Tenant) -> None:
    shop = monitor(tenant_a)
    window(tenant_a, at(2026, 3, 2, 10), 60, on=shop, weekly=True)  # a Monday

    assert not inside(shop, at(2026, 2, 23, 10, 30))  # the Monday before the first start
    assert inside(shop, at(2026, 3, 2, 10, 30))
    assert inside(shop, at(2026, 3, 9, 10))
    assert not inside(shop, at(2026, 3, 9, 11))
    assert not inside(shop, at(2026, 3, 10, 10, 30))  # a Tuesday
    assert inside(shop, at(2027, 3, 1, 10, 59))  # a year on, still Mondays


def test_a_weekly_window_keeps_its_wall_time_across_a_dst_change(tenant_a: Tenant) -> None:
    shop = monitor(tenant_a)
    # 02:00 Paris on Saturday 2026-03-21 (UTC+1), i.e. 01:00 UTC; Paris moves to UTC+2 on 03-29.
    window(tenant_a, at(2026, 3, 21, 2, zone=PARIS), 60, on=shop, weekly=True, zone="Europe/Paris")

    # The Saturday after the change: 02:00 local is 00:00 UTC, no longer 01:00 UTC.
    assert inside(shop, at(2026, 4, 4, 0, 0))
    assert inside(shop, at(2026, 4, 4, 2, 30, zone=PARIS))
    assert not inside(shop, at(2026, 4, 4, 1, 0))  # 03:00 local: the hour is over
    assert not inside(shop, at(2026, 4, 3, 23, 59))
    # Back to winter time in November: 02:00 local is 01:00 UTC again.
    assert inside(shop, at(2026, 11, 7, 1, 0))
    assert not inside(shop, at(2026, 11, 7, 0, 30))


def test_a_weekly_window_crossing_midnight_and_sunday_into_monday(tenant_a: Tenant) -> None:
    shop = monitor(tenant_a)
    # Sunday 2026-03-08 23:00 New York, three hours, so until Monday 02:00 local.
    ny = ZoneInfo("America/New_York")
    window(tenant_a, at(2026, 3, 1, 23, zone=ny), 180, on=shop, weekly=True, zone="America/New_York")

    assert inside(shop, at(2026, 3, 8, 23, 0, zone=ny))  # the DST change is that Sunday at 02:00
    assert inside(shop, at(2026, 3, 9, 1, 30, zone=ny))  # Monday, past midnight
    assert not inside(shop, at(2026, 3, 9, 2, 0, zone=ny))
    assert inside(shop, at(2026, 3, 16, 0, 10, zone=ny))
    assert not inside(shop, at(2026, 3, 15, 22, 59, zone=ny))


def test_a_tenant_wide_window_covers_every_monitor_of_that_tenant_only(tenant_a: Tenant, tenant_b: Tenant) -> None:
    shop, api, theirs = monitor(tenant_a), monitor(tenant_a, "api"), monitor(tenant_b)
    window(tenant_a, at(2026, 3, 2, 10), 30)
    other = monitor(tenant_a, "other")
    window(tenant_a, at(2026, 3, 2, 10), 30, on=other)
    # Another tenant's window, even one naming our monitor by mistake, does not count.
    window(tenant_b, at(2026, 3, 2, 12), 30)
    window(tenant_b, at(2026, 3, 2, 12), 30, on=api)
    pairs = [(m.pk, m.tenant_id) for m in (shop, api, theirs, other)]

    with CaptureQueriesContext(connection) as queries:
        found = monitors_in_maintenance(monitors=pairs, now=at(2026, 3, 2, 10, 15))

    assert found == {shop.pk, api.pk, other.pk}
    assert len(queries) == 1
    assert monitors_in_maintenance(monitors=pairs, now=at(2026, 3, 2, 12, 15)) == {theirs.pk}
    assert monitors_in_maintenance(monitors=[], now=at(2026, 3, 2, 10)) == set()


def test_a_window_longer_than_a_week_is_open_across_occurrences(tenant_a: Tenant) -> None:
    shop = monitor(tenant_a)
    window(tenant_a, at(2026, 3, 2, 10), 60 * 24 * 9, on=shop, weekly=True)

    assert inside(shop, at(2026, 3, 10, 12))  # eight days after the first start
    assert inside(shop, at(2026, 3, 10, 12) + timedelta(weeks=5))

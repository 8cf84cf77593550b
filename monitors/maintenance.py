"""Maintenance windows: which monitors are inside one at a given time (issue 11).

A window is open from each start (inclusive) for `duration_minutes` (exclusive end):

* ``once``: the start is `starts_at`.
* ``weekly``: the starts are `starts_at`, then the same local weekday and wall-clock time every
  week in the window's IANA `timezone` (zoneinfo). Wall time, not a fixed 168 h step: a window at
  02:00 Europe/Paris stays at 02:00 local across a DST change, as Gatus' and Uptime Kuma's
  recurring windows do. The duration is elapsed time from that start (a 60-minute window that
  starts one hour before a clock change still lasts 60 real minutes). A wall time that does not
  exist on a spring-forward day resolves with the offset before the change (zoneinfo, fold=0),
  i.e. one hour later on the clock. An unknown zone name is read as UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Q

from monitors.models import MaintenanceWindow, Recurrence

WEEK = timedelta(days=7)


def monitors_in_maintenance(*, monitors: Iterable[tuple[int, int]], now: datetime) -> set[int]:
    """The ids of `monitors` ((monitor_id, tenant_id) pairs) inside an open maintenance window at
    `now` (aware UTC): a window of the monitor itself or of its whole tenant (`monitor` empty).
    One query (the windows of those tenants that have started), then the calendar in Python."""
    pairs = list(monitors)
    if not pairs:
        return set()
    tenant_of = dict(pairs)
    windows = MaintenanceWindow.objects.filter(
        Q(monitor__isnull=True) | Q(monitor_id__in=tenant_of),
        tenant_id__in=set(tenant_of.values()),
        starts_at__lte=now,
    ).only("tenant_id", "monitor_id", "starts_at", "duration_minutes", "recurrence", "timezone")
    inside: set[int] = set()
    open_tenants: set[int] = set()
    for window in windows:
        if not window_open(window, now):
            continue
        if window.monitor_id is None:
            open_tenants.add(window.tenant_id)
        elif tenant_of.get(window.monitor_id) == window.tenant_id:
            inside.add(window.monitor_id)
    inside.update(monitor_id for monitor_id, tenant_id in pairs if tenant_id in open_tenants)
    return inside


def window_open(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether `window` is open at `now` (aware): some start ≤ now < that start + duration."""
    duration = timedelta(minutes=window.duration_minutes)
    return any(start <= now < start + duration for start in _starts_near(window, now, duration))


def _starts_near(window: MaintenanceWindow, now: datetime, duration: timedelta) -> Iterator[datetime]:
    """The window's starts (UTC) that could still be open at `now`: the last one at or before
    `now` and as many earlier ones as the duration reaches back over."""
    if window.recurrence != Recurrence.WEEKLY:
        yield window.starts_at
        return
    zone = _zone(window.timezone)
    first = window.starts_at.astimezone(zone)
    weeks = (now.astimezone(zone).date() - first.date()).days // 7
    # A start more than `duration` (+ a week for the date arithmetic) ago cannot be open now.
    reach = duration // WEEK + 1
    for week in range(max(weeks - reach, 0), weeks + 1):
        local = datetime.combine(first.date() + week * WEEK, first.timetz().replace(tzinfo=None), tzinfo=zone)
        yield local.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")

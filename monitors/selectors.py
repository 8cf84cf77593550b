"""Reads of the monitors app: lists, a monitor's history page by page, and its uptime figures.

Uptime and latency percentiles are computed in the database, never by loading check results
into Python: uptime sums the hourly ``MonitorRollup`` rows of the period (so a 30-day figure reads
at most 720 rows a monitor, whatever the check rate), percentiles are PostgreSQL's
``percentile_cont`` over the period's ``CheckResult`` rows, or on SQLite the same figure from the
two neighbouring ranks read with ``ORDER BY ... LIMIT 2 OFFSET k``, interpolated as
``percentile_cont`` does.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from django.db import connection
from django.db.models import Aggregate, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from accounts.models import Tenant
from core.errors import DomainError
from monitors.models import CheckResult, Flip, MaintenanceWindow, Monitor, MonitorRollup, MonitorState, RollupPeriod

# The periods of `uptime`, by the name the API answers with.
UPTIME_PERIODS: dict[str, timedelta] = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERCENTILES: dict[str, float] = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 500


# --- lists -----------------------------------------------------------------------------------------


def monitor_list() -> QuerySet[Monitor]:
    """Every monitor, with what the API's list shows (channel ids) fetched in one more query; the
    caller applies the tenant wall (``TenantScopedViewSet``)."""
    return Monitor.objects.select_related("tenant").prefetch_related("channels").order_by("tenant_id", "name", "id")


def monitors_of(tenant: Tenant) -> QuerySet[Monitor]:
    """`tenant`'s monitors by name, as ``monitor_list`` fetches them."""
    return monitor_list().filter(tenant=tenant)


def maintenance_window_list() -> QuerySet[MaintenanceWindow]:
    """Every maintenance window, the earliest start first; the caller applies the tenant wall."""
    return MaintenanceWindow.objects.select_related("tenant").order_by("tenant_id", "starts_at", "id")


# --- history ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPage:
    """Results newest first; `next_cursor` reads the page after the last one (None: no more)."""

    results: list[CheckResult]
    next_cursor: str | None


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(message, details={field: [message]}, code="validation_error")


def _cursor_encode(result: CheckResult) -> str:
    text = f"{result.checked_at.astimezone(UTC).isoformat()}|{result.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor_decode(raw: str) -> tuple[datetime, int]:
    try:
        if len(raw) > 200:
            raise ValueError(raw)
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        moment, row_id = text.split("|")
        when = datetime.fromisoformat(moment)
        if when.tzinfo is None or not (row_id.isascii() and row_id.isdigit() and len(row_id) <= 18):
            raise ValueError(text)
        return when.astimezone(UTC), int(row_id)
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise _invalid("cursor", "Invalid cursor: use the next link of a page.") from None


def history(
    monitor: Monitor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    outcome: str | None = None,
    cursor: str | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
) -> HistoryPage:
    """One page of `monitor`'s check results, newest first, keyset-paginated on (checked_at, id):
    checks at or after `since` and before `until` (aware datetimes), of `outcome` (``up`` /
    ``down``) when given, strictly older than the row the opaque `cursor` names. One query of
    `limit` + 1 rows (1-500): no OFFSET, no COUNT, so every page costs the same. Rows sharing a
    time are ordered by id: walking the cursors visits each row once. Raises DomainError (400,
    field ``cursor``) for a cursor this function did not make."""
    rows = CheckResult.objects.filter(monitor=monitor)
    if since is not None:
        rows = rows.filter(checked_at__gte=since)
    if until is not None:
        rows = rows.filter(checked_at__lt=until)
    if outcome is not None:
        rows = rows.filter(outcome=outcome)
    if cursor:
        when, row_id = _cursor_decode(cursor)
        rows = rows.filter(Q(checked_at__lt=when) | Q(checked_at=when, id__lt=row_id))
    limit = max(1, min(limit, HISTORY_MAX_LIMIT))
    page = list(rows.order_by("-checked_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return HistoryPage(results=page, next_cursor=_cursor_encode(page[-1]) if more else None)


# --- uptime ------------------------------------------------------------------------------------------


class LatencyFigures(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None


class IncidentFigures(TypedDict):
    count: int
    total_seconds: float
    longest_seconds: float
    ongoing: bool


class PeriodFigures(TypedDict):
    since: datetime
    uptime_percent: float | None
    checks: int
    failures: int
    latency_ms: LatencyFigures
    incidents: IncidentFigures


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``: the value at
    the 0-based rank (n - 1) x fraction of the sorted values, interpolated linearly."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, *, fraction: float) -> None:
        # A float the code chose (PERCENTILES), never the client's: safe to write into the SQL.
        super().__init__(expression, fraction=repr(float(fraction)))


def _percentiles_postgresql(latencies: QuerySet[CheckResult]) -> list[float | None]:
    figures = latencies.aggregate(
        **{name: PercentileCont("latency_ms", fraction=fraction) for name, fraction in PERCENTILES.items()}
    )
    return [figures[name] for name in PERCENTILES]


def _percentiles_sqlite(latencies: QuerySet[CheckResult]) -> list[float | None]:
    """``percentile_cont`` from ranks, as SQLite has no such aggregate: for a fraction p of n
    values sorted ascending, the value at the 0-based rank h = (n - 1) x p, interpolated between
    the ranks floor(h) and floor(h) + 1, each pair read with ``ORDER BY ... LIMIT 2 OFFSET
    floor(h)`` (the index on (monitor, checked_at) narrows the rows first)."""
    count = latencies.count()
    if count == 0:
        return [None] * len(PERCENTILES)
    ordered = latencies.order_by("latency_ms").values_list("latency_ms", flat=True)
    figures: list[float | None] = []
    for fraction in PERCENTILES.values():
        position = (count - 1) * fraction
        low = math.floor(position)
        pair = list(ordered[low : low + 2])
        high_value = pair[1] if len(pair) > 1 else pair[0]
        figures.append(pair[0] + (position - low) * (high_value - pair[0]))
    return figures


def latency_percentiles(monitor: Monitor, *, since: datetime, until: datetime) -> LatencyFigures:
    """p50, p95 and p99 of the latency (ms) of `monitor`'s checks from `since` to `until`
    (inclusive), as PostgreSQL's ``percentile_cont`` computes them (linear interpolation between
    ranks); None without a check that measured one. Computed in the database: one query on
    PostgreSQL, four on SQLite, none of which loads more than two rows."""
    latencies = CheckResult.objects.filter(
        monitor=monitor, checked_at__gte=since, checked_at__lte=until, latency_ms__isnull=False
    )
    compute = _percentiles_postgresql if connection.vendor == "postgresql" else _percentiles_sqlite
    p50, p95, p99 = compute(latencies)
    return LatencyFigures(p50=p50, p95=p95, p99=p99)


def _rollup_sums(monitor: Monitor, now: datetime) -> dict[str, tuple[int, int]]:
    """(checks, failures) of each period from the hourly roll-ups that started inside it (so the
    24 h figure reads the current hour and the 23 before it). One query."""
    aggregates: dict[str, Any] = {}
    for name, length in UPTIME_PERIODS.items():
        inside = Q(bucket__gte=now - length)
        aggregates[f"{name}_checks"] = Coalesce(Sum("checks", filter=inside), 0)
        aggregates[f"{name}_failures"] = Coalesce(Sum("failures", filter=inside), 0)
    longest = max(UPTIME_PERIODS.values())
    sums = MonitorRollup.objects.filter(
        monitor=monitor, period=RollupPeriod.HOUR, bucket__gte=now - longest, bucket__lte=now
    ).aggregate(**aggregates)
    return {name: (int(sums[f"{name}_checks"]), int(sums[f"{name}_failures"])) for name in UPTIME_PERIODS}


def _incidents(flips: list[tuple[datetime, str]], *, since: datetime, now: datetime) -> IncidentFigures:
    """Incidents overlapping [since, now] from `flips` ((created_at, new_state), oldest first,
    starting with the last flip before `since` if any): each runs from a flip to ``down`` to the
    next flip to ``up`` (flips between, e.g. to maintenance, do not end it); one still open runs to
    `now`. Lengths are counted inside the period only."""
    spans: list[tuple[datetime, datetime | None]] = []
    opened: datetime | None = None
    for created_at, new_state in flips:
        if new_state == MonitorState.DOWN and opened is None:
            opened = created_at
        elif new_state == MonitorState.UP and opened is not None:
            spans.append((opened, created_at))
            opened = None
    if opened is not None:
        spans.append((opened, None))
    count, total, longest, ongoing = 0, 0.0, 0.0, False
    for start, end in spans:
        stop = end if end is not None else now
        if stop < since:
            continue
        seconds = max(0.0, (stop - max(start, since)).total_seconds())
        count += 1
        total += seconds
        longest = max(longest, seconds)
        ongoing = ongoing or end is None
    return IncidentFigures(count=count, total_seconds=total, longest_seconds=longest, ongoing=ongoing)


def _flips_for(monitor: Monitor, since: datetime, now: datetime) -> list[tuple[datetime, str]]:
    """The flips to up or down from `since` to `now`, oldest first, after the last such flip
    before `since` (it tells whether an incident was already open). Two small queries."""
    relevant = Flip.objects.filter(monitor=monitor, new_state__in=[MonitorState.UP, MonitorState.DOWN])
    before = list(
        relevant.filter(created_at__lt=since).order_by("-created_at", "-id").values_list("created_at", "new_state")[:1]
    )
    inside = list(
        relevant.filter(created_at__gte=since, created_at__lte=now)
        .order_by("created_at", "id")
        .values_list("created_at", "new_state")
    )
    return before + inside


def uptime(monitor: Monitor, *, now: datetime) -> dict[str, PeriodFigures]:
    """`monitor`'s figures over the 24 h, 7 d and 30 d before `now` (aware):
    ``{"24h": {since, uptime_percent, checks, failures, latency_ms: {p50, p95, p99}, incidents:
    {count, total_seconds, longest_seconds, ongoing}}, "7d": ..., "30d": ...}``.

    ``uptime_percent`` is 100 x (1 - failures / checks) over the hourly roll-ups (None without
    checks); percentiles in ms over the period's check results (``latency_percentiles``);
    incidents from the flips (``_incidents``). About six queries, whatever the number of checks."""
    longest = max(UPTIME_PERIODS.values())
    sums = _rollup_sums(monitor, now)
    flips = _flips_for(monitor, now - longest, now)
    figures: dict[str, PeriodFigures] = {}
    for name, length in UPTIME_PERIODS.items():
        since = now - length
        checks, failures = sums[name]
        figures[name] = PeriodFigures(
            since=since,
            uptime_percent=100.0 * (1 - failures / checks) if checks else None,
            checks=checks,
            failures=failures,
            latency_ms=latency_percentiles(monitor, since=since, until=now),
            incidents=_incidents(flips, since=since, now=now),
        )
    return figures


def uptime_24h_of(monitor_ids: list[int], *, now: datetime) -> dict[int, float | None]:
    """The 24 h uptime percent of each of `monitor_ids` (None without checks), from the hourly
    roll-ups in ONE query, for a list page."""
    sums = (
        MonitorRollup.objects.filter(
            monitor_id__in=monitor_ids, period=RollupPeriod.HOUR, bucket__gte=now - UPTIME_PERIODS["24h"]
        )
        .values("monitor_id")
        .annotate(checks=Sum("checks"), failures=Sum("failures"))
    )
    figures: dict[int, float | None] = dict.fromkeys(monitor_ids)
    for row in sums:
        if row["checks"]:
            figures[row["monitor_id"]] = 100.0 * (1 - row["failures"] / row["checks"])
    return figures

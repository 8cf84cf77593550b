"""`selectors.uptime` against figures computed by hand from rows written here: uptime from the
hourly roll-ups only, latency percentiles as `percentile_cont` computes them, incidents from the
flips. The same figures on PostgreSQL and on SQLite (run the suite in both modes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from accounts.models import Tenant
from monitors import selectors
from monitors.models import CheckOutcome, CheckResult, Flip, Monitor, MonitorRollup, MonitorState, RollupPeriod

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def monitor(tenant_a: Tenant) -> Monitor:
    return Monitor.objects.create(tenant=tenant_a, name="shop", target="http://93.184.215.14/")


@pytest.fixture
def other(tenant_a: Tenant) -> Monitor:
    return Monitor.objects.create(tenant=tenant_a, name="other", target="http://93.184.215.14/other")


def hourly(monitor: Monitor, bucket: str, checks: int, failures: int, period: str = RollupPeriod.HOUR) -> None:
    MonitorRollup.objects.create(monitor=monitor, period=period, bucket=at(bucket), checks=checks, failures=failures)


def result(monitor: Monitor, when: str, latency: float | None, outcome: str = CheckOutcome.UP) -> None:
    CheckResult.objects.create(monitor=monitor, checked_at=at(when), outcome=outcome, latency_ms=latency)


def flip(monitor: Monitor, when: str, old: str, new: str) -> None:
    Flip.objects.create(tenant=monitor.tenant, monitor=monitor, created_at=at(when), old_state=old, new_state=new)


def test_uptime_sums_the_hourly_rollups_that_started_inside_each_period(monitor: Monitor, other: Monitor) -> None:
    hourly(monitor, "2026-11-30 12:00", 60, 3)  # the current hour: in all three
    hourly(monitor, "2026-11-29 13:00", 40, 1)  # the first whole hour of the 24 h
    hourly(monitor, "2026-11-29 12:00", 100, 50)  # started before 12:30 yesterday: 7 d and 30 d only
    hourly(monitor, "2026-11-25 00:00", 100, 0)
    hourly(monitor, "2026-11-10 00:00", 200, 20)  # 30 d only
    hourly(monitor, "2026-10-20 00:00", 1000, 1000)  # older than 30 d
    hourly(monitor, "2026-11-30 00:00", 500, 500, period=RollupPeriod.DAY)  # daily rows are not read
    hourly(other, "2026-11-30 12:00", 10, 10)  # another monitor's

    figures = selectors.uptime(monitor, now=NOW)

    # 24 h: 100 checks, 4 failures; 7 d: 300, 54; 30 d: 500, 74.
    assert (figures["24h"]["checks"], figures["24h"]["failures"]) == (100, 4)
    assert figures["24h"]["uptime_percent"] == pytest.approx(96.0)
    assert (figures["7d"]["checks"], figures["7d"]["failures"]) == (300, 54)
    assert figures["7d"]["uptime_percent"] == pytest.approx(82.0)
    assert (figures["30d"]["checks"], figures["30d"]["failures"]) == (500, 74)
    assert figures["30d"]["uptime_percent"] == pytest.approx(85.2)
    assert figures["24h"]["since"] == NOW - timedelta(hours=24)


def test_no_checks_means_no_uptime_figure(monitor: Monitor) -> None:
    figures = selectors.uptime(monitor, now=NOW)

    assert figures["30d"]["uptime_percent"] is None
    assert figures["30d"]["checks"] == 0
    assert figures["30d"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert figures["30d"]["incidents"] == {"count": 0, "total_seconds": 0.0, "longest_seconds": 0.0, "ongoing": False}


def test_latency_percentiles_interpolate_between_ranks_like_percentile_cont(monitor: Monitor, other: Monitor) -> None:
    # Inserted out of order: the database sorts.
    for when, latency in [("11:00", 100.0), ("11:10", 20.0), ("11:20", 40.0), ("11:30", 10.0), ("11:40", 30.0)]:
        result(monitor, f"2026-11-30 {when}", latency)
    result(monitor, "2026-11-30 11:50", None, CheckOutcome.DOWN)  # a timeout measured nothing
    result(monitor, "2026-11-28 08:00", 1000.0)  # 7 d and 30 d only
    result(monitor, "2026-10-01 08:00", 5.0)  # older than 30 d
    result(other, "2026-11-30 11:00", 99999.0)

    figures = selectors.uptime(monitor, now=NOW)

    # 24 h, sorted [10, 20, 30, 40, 100]: ranks 2, 3.8, 3.96 -> 30, 40 + 0.8 x 60, 40 + 0.96 x 60.
    assert figures["24h"]["latency_ms"] == pytest.approx({"p50": 30.0, "p95": 88.0, "p99": 97.6})
    # 7 d, sorted [10, 20, 30, 40, 100, 1000]: ranks 2.5, 4.75, 4.95.
    assert figures["7d"]["latency_ms"] == pytest.approx({"p50": 35.0, "p95": 775.0, "p99": 955.0})
    assert figures["30d"]["latency_ms"] == figures["7d"]["latency_ms"]


def test_the_rank_method_of_sqlite_agrees_with_percentile_cont_on_either_database(monitor: Monitor) -> None:
    # The suite runs on one database at a time; the rank method's queries are plain SQL, so this
    # checks it wherever the suite runs, and against PostgreSQL's own aggregate when it runs there.
    latencies = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5, 8.0]
    for minute, latency in enumerate(latencies):
        result(monitor, f"2026-11-30 11:{minute:02d}", latency)
    rows = CheckResult.objects.filter(monitor=monitor, latency_ms__isnull=False)

    # Sorted [1, 1.5, 2, 3, 3.5, 4, 5, 5.5, 6, 8, 9]: ranks 5, 9.5, 9.9 -> 4, 8.5, 8.9.
    assert selectors._percentiles_sqlite(rows) == pytest.approx([4.0, 8.5, 8.9])
    if connection.vendor == "postgresql":
        assert selectors._percentiles_postgresql(rows) == pytest.approx([4.0, 8.5, 8.9])


def test_a_single_latency_is_every_percentile(monitor: Monitor) -> None:
    result(monitor, "2026-11-30 12:00", 42.5)

    assert selectors.uptime(monitor, now=NOW)["24h"]["latency_ms"] == pytest.approx(
        {"p50": 42.5, "p95": 42.5, "p99": 42.5}
    )


def test_incidents_run_from_a_flip_to_down_to_the_next_flip_to_up_counted_inside_each_period(
    monitor: Monitor, other: Monitor
) -> None:
    down, up, unknown = MonitorState.DOWN, MonitorState.UP, MonitorState.UNKNOWN
    flip(monitor, "2026-10-20 10:00", up, down)  # older than 30 d and closed: not counted
    flip(monitor, "2026-10-20 11:00", down, up)
    flip(monitor, "2026-11-10 10:00", up, down)  # 30 min, 30 d only
    flip(monitor, "2026-11-10 10:30", down, up)
    flip(monitor, "2026-11-29 12:00", up, down)  # 1 h; 30 min of it inside the 24 h
    flip(monitor, "2026-11-29 12:40", down, MonitorState.MAINTENANCE)  # does not end the incident
    flip(monitor, "2026-11-29 12:50", MonitorState.MAINTENANCE, down)
    flip(monitor, "2026-11-29 13:00", down, up)
    flip(monitor, "2026-11-30 12:00", unknown, down)  # still down: 30 min to now
    flip(other, "2026-11-30 01:00", up, down)

    figures = selectors.uptime(monitor, now=NOW)

    assert figures["24h"]["incidents"] == {
        "count": 2,
        "total_seconds": 3600.0,
        "longest_seconds": 1800.0,
        "ongoing": True,
    }
    assert figures["7d"]["incidents"] == {
        "count": 2,
        "total_seconds": 5400.0,
        "longest_seconds": 3600.0,
        "ongoing": True,
    }
    assert figures["30d"]["incidents"] == {
        "count": 3,
        "total_seconds": 7200.0,
        "longest_seconds": 3600.0,
        "ongoing": True,
    }


def test_an_incident_open_since_before_the_period_counts_the_whole_period(monitor: Monitor) -> None:
    flip(monitor, "2026-10-01 00:00", MonitorState.UP, MonitorState.DOWN)

    figures = selectors.uptime(monitor, now=NOW)

    assert figures["24h"]["incidents"]["total_seconds"] == 86400.0
    assert figures["30d"]["incidents"] == {
        "count": 1,
        "total_seconds": 30 * 86400.0,
        "longest_seconds": 30 * 86400.0,
        "ongoing": True,
    }


def test_uptime_24h_of_a_page_of_monitors_in_one_query(
    monitor: Monitor, other: Monitor, django_assert_num_queries: object
) -> None:
    hourly(monitor, "2026-11-30 12:00", 10, 1)
    hourly(monitor, "2026-11-29 12:00", 10, 10)  # before the 24 h

    with django_assert_num_queries(1):  # type: ignore[operator]
        figures = selectors.uptime_24h_of([monitor.pk, other.pk], now=NOW)

    assert figures[monitor.pk] == pytest.approx(90.0)
    assert figures[other.pk] is None

"""The request log's daily partitions (PostgreSQL) and its retention (both databases)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from observability import services
from observability.models import RequestLog
from observability.request_log.partitions import DEFAULT_PARTITION, partition_name
from observability.tasks import request_log_retention
from observability.tests.request_log_support import no_partitions_left, postgres

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures(no_partitions_left.__name__)]

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def requires_postgres() -> None:
    if not postgres():
        pytest.skip("partitions are PostgreSQL's (SQLite keeps one table)")


def partitions_now() -> set[str]:
    """The request log's partitions, as PostgreSQL's catalog lists them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'observability_requestlog'::regclass"
        )
        return {name for (name,) in cursor.fetchall()}


def where_is(row: RequestLog) -> str:
    """The partition holding `row`."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM observability_requestlog WHERE id = %s", [row.id])
        return str(cursor.fetchone()[0])


def log_row(at: datetime, correlation_id: str = "c") -> RequestLog:
    return RequestLog.objects.create(
        time=at, correlation_id=correlation_id, method="GET", path="/x", status=200, decision="forwarded", latency_ms=1
    )


def days(*offsets: int) -> set[str]:
    return {partition_name(TODAY + timedelta(days=offset)) for offset in offsets}


def test_the_log_is_one_table_partitioned_by_range_of_time_with_id_and_time_as_key() -> None:
    requires_postgres()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'observability_requestlog'::regclass"
        )
        strategy = cursor.fetchone()
        cursor.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'observability_requestlog'::regclass AND i.indisprimary"
        )
        primary_key = cursor.fetchone()

    assert strategy == ("r",)
    assert primary_key == (["id", "time"],)
    # Only the default partition until a service or the writer makes the days' ones
    assert partitions_now() == {DEFAULT_PARTITION}


def test_ensuring_partitions_creates_the_missing_days_once() -> None:
    requires_postgres()

    first = services.request_log_partitions_ensure(first_day=TODAY, days=3)
    again = services.request_log_partitions_ensure(first_day=TODAY, days=4)

    assert set(first) == days(0, 1, 2)
    assert set(again) == days(3)
    assert partitions_now() == {DEFAULT_PARTITION} | days(0, 1, 2, 3)


def test_a_row_of_a_day_without_partition_is_kept_and_moves_in_when_its_day_gets_one() -> None:
    requires_postgres()
    # Given a row whose day has no partition yet: the default partition takes it
    row = log_row(NOW + timedelta(days=30))
    assert where_is(row) == DEFAULT_PARTITION

    services.request_log_partitions_ensure(first_day=TODAY + timedelta(days=30), days=1)

    assert where_is(row) == partition_name(TODAY + timedelta(days=30))
    assert RequestLog.objects.get().id == row.id


def test_dropping_partitions_drops_only_days_before_the_cutoff() -> None:
    requires_postgres()
    services.request_log_partitions_ensure(first_day=TODAY - timedelta(days=16), days=17)
    log_row(NOW - timedelta(days=15), "old")
    log_row(NOW - timedelta(days=14), "kept")

    dropped = services.request_log_partitions_drop(before=TODAY - timedelta(days=14))

    assert set(dropped) == days(-16, -15)
    assert partitions_now() == {DEFAULT_PARTITION} | days(*range(-14, 1))
    assert list(RequestLog.objects.values_list("correlation_id", flat=True)) == ["kept"]


def test_retention_keeps_the_retention_period_and_makes_the_coming_days(settings: object) -> None:
    # Given rows 20, 13 and 0 days old (some of them in the default partition on PostgreSQL)
    services.request_log_partitions_ensure(first_day=TODAY - timedelta(days=20), days=2)
    for age in (20, 13, 0):
        log_row(NOW - timedelta(days=age), f"{age}-days-old")

    # When retention runs with the default 14 days, twice (beat runs it hourly)
    first = services.request_log_retention(now=NOW)
    second = services.request_log_retention(now=NOW)

    # Then only the row older than 14 days is gone
    assert sorted(RequestLog.objects.values_list("correlation_id", flat=True)) == ["0-days-old", "13-days-old"]
    assert second.dropped == [] and second.created == [] and second.deleted_rows == 0
    if postgres():
        assert set(first.dropped) == days(-20, -19)
        assert days(0, 1, 2, 3) <= partitions_now()  # today and REQUEST_LOG_PARTITIONS_AHEAD (3) more
    else:
        assert first.deleted_rows == 1


def test_purging_deletes_in_bounded_batches_until_nothing_old_is_left() -> None:
    for n in range(7):
        log_row(NOW - timedelta(days=30), f"old-{n}")
    log_row(NOW, "new")

    deleted = services.request_log_purge(before=NOW - timedelta(days=14), batch_rows=3)

    assert deleted == 7
    assert list(RequestLog.objects.values_list("correlation_id", flat=True)) == ["new"]


def test_the_retention_task_runs_the_service() -> None:
    log_row(datetime.now(UTC) - timedelta(days=400), "ancient")
    log_row(datetime.now(UTC), "fresh")

    request_log_retention.apply()

    assert list(RequestLog.objects.values_list("correlation_id", flat=True)) == ["fresh"]
    if postgres():
        assert partition_name(date.today()) in partitions_now()

"""Writes of the request log outside its writer: partitions, retention, and the bulk insert the
writer uses where there is no COPY (SQLite).

On PostgreSQL the log is partitioned by UTC day (`observability.request_log.partitions`), so
retention drops whole partitions: instant, no dead rows for VACUUM, no WAL for millions of
DELETEs. On SQLite rows are deleted in bounded batches, each its own short transaction, so the
writer is never locked out for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.conf import sentinel_settings
from observability.models import RequestLog
from observability.request_log import partitions
from observability.request_log.rows import COLUMNS, Row

# Rows deleted per statement where rows are deleted (SQLite; the default partition's strays).
PURGE_BATCH_ROWS = 5000


@dataclass(frozen=True)
class RetentionReport:
    """What `request_log_retention` did: partition names created and dropped, rows deleted."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0


def partitioned() -> bool:
    """Whether the log lives in daily partitions (PostgreSQL) rather than one table."""
    return connection.vendor == "postgresql"


def request_log_rows_insert(*, rows: Sequence[Row]) -> int:
    """Inserts `rows` (tuples in `rows.COLUMNS` order) in one transaction; returns how many.
    The writer's path where COPY is not available (SQLite)."""
    objects = [RequestLog(**dict(zip(COLUMNS, row, strict=True))) for row in rows]
    with transaction.atomic():
        RequestLog.objects.bulk_create(objects)
    return len(objects)


def request_log_partitions_ensure(*, first_day: date, days: int) -> list[str]:
    """Creates the daily partitions of `days` days from `first_day` that do not exist yet (moving
    their rows out of the default partition); returns the names created. Safe to run at once from
    several processes (an advisory lock serialises them). Nothing to do off PostgreSQL."""
    if not partitioned():
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        existing = _locked_partitions(cursor)
        for day in partitions.days_between(first_day, days):
            name = partitions.partition_name(day)
            if name not in existing:
                for statement in partitions.create_partition_statements(day):
                    cursor.execute(statement)
                created.append(name)
    return created


def request_log_partitions_drop(*, before: date) -> list[str]:
    """Drops the daily partitions of days before `before` (every row of theirs is older than its
    midnight, UTC); returns the names dropped. Nothing to do off PostgreSQL."""
    if not partitioned():
        return []
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        for name in sorted(_locked_partitions(cursor)):
            day = partitions.partition_day(name)
            if day is not None and day < before:
                cursor.execute(partitions.drop_partition_statement(name))
                dropped.append(name)
    return dropped


def _locked_partitions(cursor: CursorWrapper) -> set[str]:
    """The log's partitions, once this transaction holds the partition lock (no other process
    creates or drops one until it ends)."""
    cursor.execute(partitions.LOCK)
    cursor.execute(partitions.LIST_PARTITIONS)
    return {name for (name,) in cursor.fetchall()}


def request_log_purge(*, before: datetime, batch_rows: int = PURGE_BATCH_ROWS) -> int:
    """Deletes rows older than `before`, `batch_rows` at a time (each batch its own transaction);
    returns how many. On PostgreSQL only the default partition can still hold such rows."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(RequestLog.objects.filter(time__lt=before).values_list("id", flat=True)[:batch_rows])
            if not ids:
                return deleted
            RequestLog.objects.filter(id__in=ids, time__lt=before).delete()
        deleted += len(ids)


def request_log_retention(*, now: datetime | None = None) -> RetentionReport:
    """Keeps `REQUEST_LOG_RETENTION_DAYS` days of log and the coming days' partitions.

    PostgreSQL: drops the partitions of days wholly older than the cutoff (now - retention), purges
    older strays from the default partition and old ledger entries, and creates today's and the
    next `REQUEST_LOG_PARTITIONS_AHEAD` days' partitions. SQLite: deletes older rows in batches.
    Idempotent: the beat runs it hourly.
    """
    conf = sentinel_settings.observability
    now = now or timezone.now()
    cutoff = now - timedelta(days=conf.REQUEST_LOG_RETENTION_DAYS)
    today = now.astimezone(UTC).date()
    created = request_log_partitions_ensure(first_day=today, days=conf.REQUEST_LOG_PARTITIONS_AHEAD + 1)
    # A partition goes once its whole day is past the cutoff: rows stay 0-1 day beyond retention.
    dropped = request_log_partitions_drop(before=cutoff.astimezone(UTC).date())
    deleted = request_log_purge(before=cutoff)
    if partitioned():
        _ledger_purge(before=cutoff)
    return RetentionReport(created=created, dropped=dropped, deleted_rows=deleted)


def _ledger_purge(*, before: datetime) -> None:
    # A ledger entry is needed only until its batch's writer has retried; older ones are noise.
    with connection.cursor() as cursor:
        cursor.execute(partitions.LEDGER_PURGE, [before])

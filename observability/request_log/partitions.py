"""The SQL of the request log's daily partitions on PostgreSQL (no Django: the writer runs it on its
own psycopg connection, the services on Django's).

`observability_requestlog` is partitioned by range of `time` (migration 0002): one partition per
UTC day, `observability_requestlog_pYYYYMMDD` holding [day 00:00, next day 00:00), plus a DEFAULT
partition that catches a row whose day has no partition yet, so no row is ever refused for want of
one. Creating a day's partition moves that day's rows out of the default partition in the same
transaction (PostgreSQL refuses to attach a range the default partition still holds rows of).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

TABLE = "observability_requestlog"
DEFAULT_PARTITION = f"{TABLE}_default"
# Batches already written (the writer's exactly-once ledger: see backends.PostgresBackend).
LEDGER = f"{TABLE}_batch"
_DAY_PARTITION = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# pg_advisory_xact_lock key serialising partition changes across processes (creating the same
# partition twice at once fails on the catalog's unique index instead of "already exists").
# Any constant unique to this job: crc32(b"observability_requestlog partitions").
PARTITION_LOCK_KEY = 0x5E7A_1C0D

# Every statement here is built from the constant names above and dates, never from input.
LIST_PARTITIONS = (
    "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid "  # noqa: S608
    f"WHERE pg_inherits.inhparent = '{TABLE}'::regclass"
)
LEDGER_PURGE = f'DELETE FROM "{LEDGER}" WHERE "written_at" < %s'  # noqa: S608
LOCK = f"SELECT pg_advisory_xact_lock({PARTITION_LOCK_KEY})"


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day a partition named by `partition_name` holds; None for any other table."""
    found = _DAY_PARTITION.match(name)
    return datetime.strptime(found.group(1), "%Y%m%d").date() if found else None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day, as aware datetimes."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def create_partition_statements(day: date) -> list[str]:
    """Statements creating `day`'s partition, to run in one transaction after `LOCK`, when
    `LIST_PARTITIONS` does not list it: a table like the parent, that day's rows moved into it from
    the default partition, then attached (which builds its share of the parent's indexes)."""
    name = partition_name(day)
    start, end = (bound.isoformat() for bound in day_bounds(day))
    return [
        # ATTACH demands the parent's CHECK constraints on the table (status >= 0).
        f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING CONSTRAINTS)',
        f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE "time" >= \'{start}\' AND "time" < \'{end}\' '  # noqa: S608
        f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
        f"ALTER TABLE \"{TABLE}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{start}') TO ('{end}')",
    ]


def drop_partition_statement(name: str) -> str:
    return f'DROP TABLE IF EXISTS "{name}"'


def days_between(first: date, count: int) -> list[date]:
    """`count` consecutive days from `first`."""
    return [first + timedelta(days=n) for n in range(count)]

"""The request log's queue and writer, in this process, against the run's real database (SQLite
or PostgreSQL: the writer picks COPY or bulk_create as a web process would)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from django.db import close_old_connections, connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from core.db import postgres_connect_kwargs
from observability.models import Decision, RequestLog
from observability.request_log.backends import PostgresBackend
from observability.request_log.pipeline import database_backend
from observability.request_log.queue import RecordQueue
from observability.request_log.rows import (
    COLUMNS,
    PG_TYPES,
    RECORD_OVERHEAD_BYTES,
    ROWS_PER_TURN,
    record_row,
    records_rows,
)
from observability.request_log.writer import RequestLogWriter, WriterConfig
from observability.tests.request_log_support import make_record, postgres, stored_correlation_ids
from tests.support.aio import run_bounded
from tests.support.net import tcp_relay
from tests.support.waiting import wait_until

T = TypeVar("T")


def metric(name: str) -> float:
    """A sample of `/metrics` as Prometheus reads it (every process's files summed)."""
    body = Client().get("/metrics").content.decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return 0.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    # Longer than `eventually`'s 20 s, so that a condition that never holds fails with its own message.
    return run_bounded(coroutine, timeout=60, what="the writer scenario")


# --- The queue: bounds and drops ------------------------------------------------------------


def test_the_queue_keeps_the_oldest_and_drops_new_records_past_its_row_bound(db: None) -> None:
    queue = RecordQueue(max_rows=3, max_bytes=10**9, batch_rows=100)
    before = metric("sentinel_log_dropped_total")

    for n in range(5):
        queue.append(make_record(n))

    assert [record.correlation_id for record in queue.drain()] == ["req-0", "req-1", "req-2"]
    assert queue.dropped == 2
    assert metric("sentinel_log_dropped_total") == before + 2


def test_the_queue_bounds_estimated_bytes_too(db: None) -> None:
    # Room for two records with 10 KB paths, and not a third
    size = RECORD_OVERHEAD_BYTES + 10_000 + len("pytest") + len("req-0")
    queue = RecordQueue(max_rows=1000, max_bytes=2 * size + 100, batch_rows=100)

    for n in range(3):
        queue.append(make_record(n, path="/" + "x" * 9_999))

    assert len(queue) == 2
    assert queue.dropped == 1


def test_a_batch_the_writer_holds_counts_against_the_bound_until_released(db: None) -> None:
    queue = RecordQueue(max_rows=3, max_bytes=10**9, batch_rows=2)
    for n in range(3):
        queue.append(make_record(n))
    batch = queue.take(2)  # being written (or retried): still in memory

    queue.append(make_record(3))
    queue.release(batch)
    queue.append(make_record(4))
    queue.append(make_record(5))

    assert [record.correlation_id for record in queue.drain()] == ["req-2", "req-4", "req-5"]
    assert queue.dropped == 1


def test_rows_fit_their_columns_whatever_the_request_carried(db: None) -> None:
    record = make_record(path="/a\x00b" + "p" * 3000, client_ip="unknown", user_agent="u" * 500, tenant_uuid=None)

    values = record_row(record)

    assert values[0].tzinfo is not None
    assert "\x00" not in values[10] and len(values[10]) == 2000  # path
    assert values[17] is None  # client_ip: not an address
    assert len(values[18]) == 256  # user agent


# --- The writer ------------------------------------------------------------------------------


async def with_writer(
    config: WriterConfig, body: Callable[[RecordQueue, RequestLogWriter], Awaitable[None]], **queue: Any
) -> None:
    """Runs a writer on the run's database for `body`, then stops it (flushing, 5 s at most)."""
    bounds = {"max_rows": 100_000, "max_bytes": 64 * 1024 * 1024, **queue}
    records = RecordQueue(batch_rows=config.batch_rows, **bounds)
    writer = RequestLogWriter(records, database_backend(), config)
    writer.start()
    try:
        await body(records, writer)
    finally:
        await writer.stop(5.0)


async def in_thread(function: Callable[[], T]) -> T:
    """Runs an ORM query from async code (in a thread, whose connection is closed after)."""

    def call() -> T:
        try:
            return function()
        finally:
            close_old_connections()
            connection.close()

    return await asyncio.to_thread(call)


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 20) -> None:
    """`wait_until` for a predicate that queries the ORM, from async code."""
    await in_thread(lambda: wait_until(predicate, timeout=timeout, what=what))


@pytest.mark.django_db(transaction=True)
def test_the_writer_writes_full_batches_at_once_and_the_rest_at_shutdown() -> None:
    # Given a writer that flushes every 1,000 rows or, else, only once an hour
    config = WriterConfig(batch_rows=50, flush_seconds=3600)
    left_in_queue: list[int] = []

    async def body(queue: RecordQueue, writer: RequestLogWriter) -> None:
        # When 120 records arrive
        for n in range(120):
            queue.append(make_record(n))
        # Then two full batches are written without waiting for the hour, and 20 wait
        await eventually(lambda: RequestLog.objects.count() == 100, "two batches of 50")
        left_in_queue.append(len(queue))

    run(with_writer(config, body))

    assert left_in_queue == [20]
    # and stopping wrote the rest: each record once
    assert stored_correlation_ids() == {f"req-{n}": 1 for n in range(120)}


def test_the_event_loop_runs_other_tasks_while_a_batch_is_converted(db: None) -> None:
    records = [make_record(n) for n in range(1000)]

    async def scenario() -> tuple[int, int]:
        turns = 0
        converting = True

        async def ticker() -> None:  # stands for the proxy's requests: counts the loop's turns
            nonlocal turns
            while converting:
                turns += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = turns
        # When the writer converts a batch of 1,000 records to rows
        rows = await records_rows(records)
        converting = False
        await ticking
        return turns - before, len(rows)

    turns, converted = run(scenario())
    assert converted == 1000
    # Then other tasks ran between its chunks of ROWS_PER_TURN rows (~3.5 µs a row: a whole batch
    # at once held every request arriving meanwhile for ~3.5 ms). The COPY yields the same way.
    assert turns >= 1000 // ROWS_PER_TURN - 1


@pytest.mark.django_db(transaction=True)
def test_the_writer_flushes_a_small_batch_once_it_is_old_enough() -> None:
    config = WriterConfig(batch_rows=1000, flush_seconds=0.2)

    async def body(queue: RecordQueue, writer: RequestLogWriter) -> None:
        for n in range(5):
            queue.append(make_record(n, decision="limited", status=429, reason="burst"))
        await eventually(lambda: RequestLog.objects.count() == 5, "5 rows flushed by age")

    run(with_writer(config, body))

    rows = list(RequestLog.objects.order_by("correlation_id"))
    assert [(row.status, row.decision, row.reason) for row in rows] == [(429, Decision.LIMITED, "burst")] * 5
    assert rows[0].route_id == 7 and rows[0].client_ip == "203.0.113.9" and rows[0].route == "/api/"


@pytest.mark.django_db(transaction=True)
def test_every_field_of_the_record_reaches_its_column() -> None:
    tenant = str(uuid.uuid4())
    record = make_record(
        1, tenant_uuid=tenant, principal="key_ab12", breaker_transition="open", status=502, decision="upstream_error",
        bytes_in=12, bytes_out=345, arrived_at=1_700_000_000.25, client_ip="2001:db8::1",
    )  # fmt: skip

    async def body(queue: RecordQueue, writer: RequestLogWriter) -> None:
        queue.append(record)

    run(with_writer(WriterConfig(batch_rows=10, flush_seconds=3600), body))

    row = RequestLog.objects.get()
    assert str(row.tenant_uuid) == tenant
    assert (row.principal, row.breaker_transition, row.bytes_in, row.bytes_out) == ("key_ab12", "open", 12, 345)
    assert row.time.timestamp() == 1_700_000_000.25
    assert row.client_ip == "2001:db8::1"
    assert (row.trace_id, row.user_agent, row.upstream_latency_ms) == (record.trace_id, "pytest", 1.0)


@pytest.mark.django_db(transaction=True)
def test_edge_values_come_back_as_they_went_in() -> None:
    # The binary COPY sends each value in its column's own format: the other address family, no
    # tenant, no route, NULL upstream latency, a float that text would round, non-ASCII texts, the
    # longest texts the columns take, the largest status and byte counts.
    record = make_record(
        2, tenant_uuid=None, route_id=None, client_ip="198.51.100.7", upstream_latency_ms=None,
        latency_ms=0.1 + 0.2, path="/caf\u00e9/\u2603" + "p" * 1994, user_agent="Mozilla/5.0 (\u00fc) " + "u" * 300,
        status=599, bytes_in=2**62, bytes_out=0, arrived_at=1_700_000_000.999999,
    )  # fmt: skip

    async def body(queue: RecordQueue, writer: RequestLogWriter) -> None:
        queue.append(record)

    run(with_writer(WriterConfig(batch_rows=10, flush_seconds=3600), body))

    row = RequestLog.objects.get()
    assert (row.tenant_uuid, row.route_id, row.upstream_latency_ms) == (None, None, None)
    assert row.client_ip == "198.51.100.7"
    assert row.latency_ms == 0.1 + 0.2
    assert row.path == record.path[:2000] and len(row.path) == 2000
    assert row.user_agent == record.user_agent[:256]
    assert (row.status, row.bytes_in, row.bytes_out) == (599, 2**62, 0)
    assert row.time.timestamp() == pytest.approx(1_700_000_000.999999, abs=1e-6)


def test_the_binary_copy_names_the_types_of_the_model_s_columns() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the binary COPY is PostgreSQL's")
    names = {"timestamp with time zone": "timestamptz", "integer": "int4", "smallint": "int2", "bigint": "int8",
             "double precision": "float8", "uuid": "uuid", "inet": "inet"}  # fmt: skip
    for column, pg_type in zip(COLUMNS, PG_TYPES, strict=True):
        db_type = RequestLog._meta.get_field(column).db_type(connection).split("(")[0]
        assert names.get(db_type, db_type) == pg_type, column


# --- PostgreSQL: outages and the lost COMMIT answer ---------------------------------------------


def relayed_backend(port: int) -> PostgresBackend:
    """The writer's backend, its connection through a relay on `port`."""
    kwargs = postgres_connect_kwargs(connection.settings_dict, application_name="sentinel-request-log")
    return PostgresBackend({**kwargs, "host": "127.0.0.1", "port": port, "connect_timeout": 2})


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_commit_answer_was_lost_is_written_once() -> None:
    if not postgres():
        pytest.skip("the COPY writer and its ledger are PostgreSQL's")
    records = [make_record(n) for n in range(25)]
    with tcp_relay(int(connection.settings_dict.get("PORT") or 5432)) as relay:
        # Given a connection that will die right after the server received the batch's COMMIT
        relay.lose_answer_to(b"COMMIT")
        queue = RecordQueue(max_rows=1000, max_bytes=10**9, batch_rows=25)
        writer = RequestLogWriter(queue, relayed_backend(relay.port), WriterConfig(batch_rows=25, retry_seconds=0.05))

        async def write() -> None:
            for record in records:
                queue.append(record)
            # When the writer writes the batch, sees the connection die, and retries it
            await writer.flush_batch()
            await writer.stop(5.0)

        run(write())

    # Then the first attempt did commit (the trap went off), and the retry added nothing
    assert relay.answers_lost == 1
    assert stored_correlation_ids() == {f"req-{n}": 1 for n in range(25)}


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_keeps_the_rows_and_writes_them_once_it_is_back(caplog: pytest.LogCaptureFixture) -> None:
    if not postgres():
        pytest.skip("the outage is made with a relay in front of PostgreSQL")
    caplog.set_level(logging.WARNING, logger="sentinel.request_log")
    config = WriterConfig(batch_rows=10, flush_seconds=0.1, retry_seconds=0.05, retry_max_seconds=0.2)
    with tcp_relay(int(connection.settings_dict.get("PORT") or 5432)) as relay:
        queue = RecordQueue(max_rows=1000, max_bytes=10**9, batch_rows=10)
        writer = RequestLogWriter(queue, relayed_backend(relay.port), config)

        async def outage() -> None:
            writer.start()
            queue.append(make_record(0))
            await eventually(lambda: RequestLog.objects.count() == 1, "the first row")
            # Given the database unreachable (connections cut, new ones refused)
            relay.cut()
            # When requests go on
            for n in range(1, 60):
                queue.append(make_record(n))
            await eventually(lambda: "writing failed" in caplog.text, "the writer to meet the outage")
            during = await in_thread(RequestLog.objects.count)
            # and the database comes back
            relay.start()
            await eventually(lambda: RequestLog.objects.count() == 60, "every row after the outage")
            await writer.stop(5.0)
            assert during == 1

        run(outage())

    assert stored_correlation_ids() == {f"req-{n}": 1 for n in range(60)}
    assert "writing again after" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_past_its_bound_the_queue_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    if not postgres():
        pytest.skip("the outage is made with a relay in front of PostgreSQL")
    before = metric("sentinel_log_dropped_total")
    config = WriterConfig(batch_rows=5, flush_seconds=0.05, retry_seconds=0.05, retry_max_seconds=0.1)
    with tcp_relay(int(connection.settings_dict.get("PORT") or 5432)) as relay:
        relay.cut()
        queue = RecordQueue(max_rows=20, max_bytes=10**9, batch_rows=5)
        writer = RequestLogWriter(queue, relayed_backend(relay.port), config)

        async def flood() -> None:
            writer.start()
            # Given an unreachable database, when 50 requests arrive with room for 20
            for n in range(50):
                queue.append(make_record(n))
                await asyncio.sleep(0)
            await eventually(lambda: "writing failed" in caplog.text, "the writer to meet the outage")
            relay.start()
            await eventually(lambda: RequestLog.objects.count() == 20, "the 20 kept rows")
            await writer.stop(5.0)

        run(flood())

    # Then the 20 oldest were kept, the 30 newest dropped, counted and logged in one line
    assert stored_correlation_ids() == {f"req-{n}": 1 for n in range(20)}
    assert metric("sentinel_log_dropped_total") == before + 30
    drops = [r.getMessage() for r in caplog.records if "while the queue was full" in r.getMessage()]
    assert len(drops) == 1 and drops[0].startswith("request log: dropped 30 rows"), drops


@pytest.mark.django_db(transaction=True)
def test_a_stopping_writer_gives_up_at_its_deadline_and_counts_what_it_lost() -> None:
    if not postgres():
        pytest.skip("the outage is made with a relay in front of PostgreSQL")
    before = metric("sentinel_log_dropped_total")
    with tcp_relay(int(connection.settings_dict.get("PORT") or 5432)) as relay:
        relay.cut()
        queue = RecordQueue(max_rows=1000, max_bytes=10**9, batch_rows=10)
        writer = RequestLogWriter(queue, relayed_backend(relay.port), WriterConfig(batch_rows=10, retry_seconds=0.05))

        async def stop_during_outage() -> None:
            writer.start()
            for n in range(15):
                queue.append(make_record(n))
            # A bound on the wait, not a speed test: stop must return on its own deadline.
            await asyncio.wait_for(writer.stop(0.5), 10)

        run(stop_during_outage())

    assert RequestLog.objects.count() == 0
    assert metric("sentinel_log_dropped_total") == before + 15

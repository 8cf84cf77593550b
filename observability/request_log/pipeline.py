"""The request log's pipeline for one web process, built from the settings (the site wires it:
its `sink` into the proxy's `on_complete`, `start`/`stop` into the ASGI lifespan)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from core.conf import ObservabilitySettings, sentinel_settings
from core.db import postgres_connect_kwargs
from gateway.engine.proxy import RequestRecord
from observability.request_log.backends import Backend, OrmBackend, PostgresBackend
from observability.request_log.queue import RecordQueue
from observability.request_log.writer import RequestLogWriter, WriterConfig


@dataclass
class RequestLogPipeline:
    queue: RecordQueue
    writer: RequestLogWriter
    shutdown_seconds: float

    @property
    def sink(self) -> Callable[[RequestRecord], None]:
        """The proxy's `on_complete` sink (`RecordQueue.append`)."""
        return self.queue.append

    def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop(self.shutdown_seconds)


def writer_config(conf: ObservabilitySettings) -> WriterConfig:
    return WriterConfig(
        batch_rows=conf.REQUEST_LOG_BATCH_ROWS,
        flush_seconds=conf.REQUEST_LOG_FLUSH_SECONDS,
        retry_seconds=conf.REQUEST_LOG_RETRY_SECONDS,
        retry_max_seconds=conf.REQUEST_LOG_RETRY_MAX_SECONDS,
        write_timeout_seconds=conf.REQUEST_LOG_WRITE_TIMEOUT_SECONDS,
        partitions_ahead=conf.REQUEST_LOG_PARTITIONS_AHEAD,
    )


def database_backend() -> Backend:
    """COPY on PostgreSQL, the ORM's bulk insert anywhere else."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("postgresql"):
        return PostgresBackend(postgres_connect_kwargs(database, application_name="sentinel-request-log"))
    return OrmBackend()


def request_log_pipeline() -> RequestLogPipeline | None:
    """This process's pipeline, or None when REQUEST_LOG_ENABLED is off."""
    conf = sentinel_settings.observability
    if not conf.REQUEST_LOG_ENABLED:
        return None
    queue = RecordQueue(
        max_rows=conf.REQUEST_LOG_MAX_ROWS, max_bytes=conf.REQUEST_LOG_MAX_BYTES, batch_rows=conf.REQUEST_LOG_BATCH_ROWS
    )
    writer = RequestLogWriter(queue, database_backend(), writer_config(conf))
    return RequestLogPipeline(queue=queue, writer=writer, shutdown_seconds=conf.REQUEST_LOG_SHUTDOWN_SECONDS)

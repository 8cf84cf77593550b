"""The writer: one asyncio task per web process that empties the queue into the database.

A batch is written as soon as `batch_rows` records are queued, or `flush_seconds` after the last
write, whichever comes first, so a row waits about a second at most on a quiet process and a busy
one writes full batches. A failed write keeps its batch and retries it (the same batch id, so the
backend can tell a repeat) after an exponential backoff with jitter: `retry_seconds` doubled per
failure up to `retry_max_seconds`, times a random factor in [0.5, 1] ("equal jitter", AWS
Architecture Blog, "Exponential Backoff and Jitter", 2015) so a fleet that lost its database
together does not come back in step. Meanwhile the queue fills up to its bound (`queue`).

`stop` (lifespan shutdown) writes what is left, retrying as above, until `shutdown_seconds` have
passed; whatever is still unwritten then is counted as dropped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from observability.metrics import log_dropped, log_queue_rows, log_written
from observability.request_log.backends import Backend, PermanentWriteError
from observability.request_log.partitions import days_between
from observability.request_log.queue import RecordQueue
from observability.request_log.rows import Row, records_rows

logger = logging.getLogger("sentinel.request_log")


@dataclass(frozen=True)
class WriterConfig:
    """The writer's tunables (SENTINEL_OBSERVABILITY's REQUEST_LOG_*; seconds unless named)."""

    batch_rows: int = 1000
    flush_seconds: float = 1.0
    retry_seconds: float = 0.5
    retry_max_seconds: float = 10.0
    write_timeout_seconds: float = 30.0
    partitions_ahead: int = 3


class RequestLogWriter:
    def __init__(self, queue: RecordQueue, backend: Backend, config: WriterConfig) -> None:
        self.queue, self.backend, self.config = queue, backend, config
        self._stopping = asyncio.Event()
        self._deadline: float | None = None  # loop time at which a stopping writer gives up
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # consecutive failed attempts
        self._failing_since = 0.0

    def start(self) -> None:
        """Starts the task on the running loop (the server's, from the lifespan startup)."""
        self._task = asyncio.create_task(self.run(), name="request-log-writer")

    async def stop(self, timeout: float) -> None:
        """Writes what is left for up to `timeout` seconds, then stops; counts what is left over."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        self._stopping.set()
        self.queue.batch_ready.set()
        if self._task is None:
            await self.drain()
            return
        try:
            # A little past the deadline: the task stops by itself at it, unless stuck in I/O.
            await asyncio.wait_for(asyncio.shield(self._task), timeout + 1.0)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._drop(len(self.queue), "the writer did not stop in time")

    async def run(self) -> None:
        today = datetime.now(UTC).date()
        await self.backend.prepare(days_between(today, self.config.partitions_ahead + 1))
        while not self._stopping.is_set():
            if len(self.queue) < self.config.batch_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue.batch_ready.wait(), self.config.flush_seconds)
            await self.flush_batch()
        await self.drain()

    async def drain(self) -> None:
        """Writes every queued record (until the stop deadline), counts the rest as dropped."""
        while len(self.queue) and not self._past_deadline():
            await self.flush_batch()
        self._drop(len(self.queue), "shutdown deadline reached")
        self._report_drops()
        log_queue_rows.set(self.queue.pending_rows)
        await self.backend.close()

    async def flush_batch(self) -> int:
        """Writes the oldest `batch_rows` records, retrying until written (or given up on while
        stopping); returns how many were written."""
        batch = self.queue.take(self.config.batch_rows)
        log_queue_rows.set(self.queue.pending_rows)
        if not batch:
            return 0
        try:
            rows = await records_rows(batch)
            return await self._write_until_done(uuid.uuid4(), rows)
        finally:
            self.queue.release(batch)
            log_queue_rows.set(self.queue.pending_rows)
            self._report_drops()

    async def _write_until_done(self, batch_id: uuid.UUID, rows: list[Row]) -> int:
        while True:
            try:
                async with asyncio.timeout(self._attempt_timeout()):
                    fresh = await self.backend.write(batch_id, rows)
            except PermanentWriteError as exc:
                logger.error("request log: the database refused a batch of %d rows: %s", len(rows), exc)
                self._drop(len(rows), "refused by the database")
                return 0
            except Exception as exc:  # noqa: BLE001 - any failure to write is retried
                self._failed(exc)
                if self._past_deadline():
                    self._drop(len(rows), "shutdown deadline reached")
                    return 0
                await self._backoff()
                continue
            self._succeeded()
            if fresh:
                log_written.inc(len(rows))
            return len(rows)

    def _attempt_timeout(self) -> float:
        if self._deadline is None:
            return self.config.write_timeout_seconds
        remaining = self._deadline - asyncio.get_running_loop().time()
        return max(0.001, min(self.config.write_timeout_seconds, remaining))

    def _past_deadline(self) -> bool:
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline

    async def _backoff(self) -> None:
        delay = min(self.config.retry_max_seconds, self.config.retry_seconds * 2 ** (self._failures - 1))
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
        if self._deadline is None:
            # A stop request ends the wait: the stopping writer retries on its own deadline.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        else:
            await asyncio.sleep(min(delay, max(0.0, self._deadline - asyncio.get_running_loop().time())))

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            self._failing_since = time.monotonic()
            logger.warning("request log: writing failed (%r); holding the rows and retrying", exc)
        else:
            logger.debug("request log: attempt %d failed (%r)", self._failures, exc)

    def _succeeded(self) -> None:
        if self._failures:
            logger.warning(
                "request log: writing again after %d failed attempts over %.1f s",
                self._failures,
                time.monotonic() - self._failing_since,
            )
        self._failures = 0

    def _drop(self, count: int, why: str) -> None:
        if count <= 0:
            return
        logger.error("request log: dropped %d rows (%s)", count, why)
        log_dropped.inc(count)

    def _report_drops(self) -> None:
        """Logs the rows the full queue refused, once per episode: when the episode ends (a write
        succeeded and the queue has room again), or at shutdown."""
        dropped = self.queue.dropped
        ended = self._failures == 0 and self.queue.pending_rows < self.queue.max_rows
        if dropped and (ended or self._stopping.is_set()):
            logger.error(
                "request log: dropped %d rows while the queue was full (REQUEST_LOG_MAX_ROWS %d, "
                "REQUEST_LOG_MAX_BYTES %d)",
                dropped,
                self.queue.max_rows,
                self.queue.max_bytes,
            )
            self.queue.dropped = 0

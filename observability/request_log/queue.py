"""The bounded queue between the proxy and the writer.

`append` is the proxy's sink: it runs on the event loop for every request, after the response was
sent, in constant time, and never awaits: a deque append, two additions and, when a batch is
complete, an event set. Records stay records (the writer converts them to rows a batch at a time).

The bound counts every record not yet written, queued or in the batch the writer holds (a batch
being retried still holds memory), in rows and in estimated bytes (`rows.record_bytes`). Past
either bound a new record is dropped, not the oldest: the rows kept are the first of the outage
(what led to it) and stay a contiguous stretch of time, and a batch the writer holds cannot be
dropped anyway, since a lost COMMIT answer may mean it is already written.
"""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.engine.proxy import RequestRecord
from observability.metrics import log_dropped
from observability.request_log.rows import record_bytes


class RecordQueue:
    """Records waiting for the writer, bounded by `max_rows` and `max_bytes` (see the module)."""

    def __init__(self, *, max_rows: int, max_bytes: int, batch_rows: int) -> None:
        self.max_rows, self.max_bytes, self.batch_rows = max_rows, max_bytes, batch_rows
        self._records: deque[RequestRecord] = deque()
        self.bytes = 0  # estimated, of the queued records and the held batch
        self.held_rows = 0  # in the batch the writer took and has not written yet
        self.held_bytes = 0
        self.dropped = 0  # since the writer last reported drops (the current episode)
        self.batch_ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def pending_rows(self) -> int:
        """Records not written yet: queued plus held by the writer."""
        return len(self._records) + self.held_rows

    def append(self, record: RequestRecord) -> None:
        """The proxy's `on_complete` sink: queues `record`, or drops and counts it past a bound."""
        size = record_bytes(record)
        if len(self._records) + self.held_rows >= self.max_rows or self.bytes + size > self.max_bytes:
            self.dropped += 1
            log_dropped.inc()
            return
        self._records.append(record)
        self.bytes += size
        if len(self._records) == self.batch_rows:
            self.batch_ready.set()

    def take(self, limit: int) -> list[RequestRecord]:
        """Up to `limit` of the oldest records, now held by the writer until `release`."""
        batch = [self._records.popleft() for _ in range(min(limit, len(self._records)))]
        self.held_rows += len(batch)
        self.held_bytes += sum(record_bytes(record) for record in batch)
        if len(self._records) < self.batch_rows:
            self.batch_ready.clear()
        return batch

    def release(self, batch: list[RequestRecord]) -> None:
        """Forgets a batch taken by `take`: written, or given up on."""
        size = sum(record_bytes(record) for record in batch)
        self.held_rows -= len(batch)
        self.held_bytes -= size
        self.bytes -= size

    def drain(self) -> list[RequestRecord]:
        """Every queued record, now held (a stopping writer's last batch)."""
        return self.take(len(self._records))

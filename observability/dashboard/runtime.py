"""The dashboard's part of a web process: the request sink, and two once-a-second loops.

`DashboardRuntime.recorder` is the proxy's request sink (`sentinel_site/asgi.py` hands it to
`request_sinks`). With the server's lifespan it starts:

- the pusher: shortly after each second ends, this process's finished buckets and gauges go to
  the fleet store (Redis, or memory in embedded mode);
- the producer: mid-second, if this process holds the lease (`producer.py`), the snapshots of the
  views someone watches (none when nobody does) are computed from the fleet store, kept in the
  cache and sent to the Channels groups.

Both do their I/O in a worker thread; a failure is logged (once per outage) and the next second
tries again. Nothing here runs on the proxy's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections

from core.prometheus import process_identifier
from observability.dashboard.fleet import Fleet, Gauges
from observability.dashboard.live import LiveRecorder
from observability.dashboard.producer import Lease, lease_for, snapshots_produce
from observability.dashboard.scopes import fleet_store

logger = logging.getLogger("sentinel.observability")

# Offsets into each second: push just after it ends, produce once the pushes of the fleet are in.
PUSH_AT = 0.05
PRODUCE_AT = 0.4
# A step's I/O has 1 s timeouts (Redis) and a few queries: this is ample.
STOP_TIMEOUT_SECONDS = 5


class ProcessGauge(Protocol):
    """The proxy's pressure gauge (`gateway.engine.pressure.PressureGauge`)."""

    in_flight: int

    def score(self) -> float: ...


class DashboardRuntime:
    """See the module. `start()` and `stop()` are called from the ASGI lifespan."""

    def __init__(self) -> None:
        self.recorder = LiveRecorder()
        self.fleet: Fleet | None = None
        self.lease: Lease | None = None
        self.gauge: ProcessGauge | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._failing: set[str] = set()

    async def start(self, *, gauge: ProcessGauge | None = None) -> None:
        self.gauge = gauge
        self.fleet = fleet_store()
        self.lease = lease_for(self.fleet)
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(_every_second(PUSH_AT, self.push, self._stopping), name="dashboard-push"),
            asyncio.create_task(_every_second(PRODUCE_AT, self.produce, self._stopping), name="dashboard-produce"),
        ]

    async def stop(self) -> None:
        """Lets each loop finish the step it is in (a step cancelled mid-way would leave its worker
        thread running past the server's shutdown), then releases the lease. Cancelled, it cancels
        the loops and raises: the lease then lapses on its own."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        late: set[asyncio.Task[None]] = set()
        try:
            # asyncio.wait, not wait_for: it neither raises a loop's own end by cancellation as if
            # stop() were cancelled, nor (3.11's wait_for can) lets a cancel of stop() go unraised.
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in late:
            logger.warning("dashboard loop %s did not stop in time", task.get_name())
            task.cancel()
        if self.lease is not None:
            await self._guarded("release", sync_to_async(self.lease.release, thread_sensitive=False))

    async def push(self) -> None:
        """This process's finished seconds and gauges to the fleet store."""
        assert self.fleet is not None
        buckets = self.recorder.take_finished()  # on the loop's thread, where the sink writes
        gauge = self.gauge
        gauges = Gauges(process_identifier(), gauge.in_flight if gauge else 0, gauge.score() if gauge else 0.0)
        await self._guarded("push", sync_to_async(self.fleet.push, thread_sensitive=False), buckets, gauges)

    async def produce(self) -> None:
        """If this process holds the lease: this second's snapshots, kept and published."""
        assert self.fleet is not None and self.lease is not None
        holds = await self._guarded("lease", sync_to_async(self.lease.hold, thread_sensitive=False))
        if not holds:
            return
        produced = await self._guarded("produce", _in_thread(snapshots_produce), fleet=self.fleet)
        layer = get_channel_layer()
        for group, snapshot in produced or []:
            await self._guarded("publish", layer.group_send, group, {"type": "snapshot.push", "snapshot": snapshot})

    async def _guarded(self, step: str, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Runs one step; logs its first failure in a row (with the traceback) and its recovery."""
        try:
            result = await call(*args, **kwargs)
        except Exception:
            if step not in self._failing:
                logger.exception("dashboard %s failed; retrying every second", step)
                self._failing.add(step)
            return None
        if step in self._failing:
            logger.info("dashboard %s works again", step)
            self._failing.discard(step)
        return result


def _in_thread(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`function` in a worker thread, closing the database connections it leaves (no request
    cycle closes them here)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


async def _every_second(offset: float, step: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
    """Calls `step` at `offset` s into every wall-clock second (the same instant in every process,
    so the producer reads what the pushers just wrote) until `stopping` is set; a slow step skips
    the seconds it overran."""
    while not stopping.is_set():
        now = time.time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=(int(now) + 1 + offset) - now)
            return
        await step()

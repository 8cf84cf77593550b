"""`DashboardRuntime.stop()`: the loops' last steps, its timeout, and its own cancellation (the
steps here are stand-ins that never end, and the lease a recorder: no Redis, no database)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from observability.dashboard import runtime as runtime_module
from observability.dashboard.runtime import DashboardRuntime
from tests.support.aio import run_bounded


class RecordedLease:
    name = "recorded"

    def __init__(self) -> None:
        self.released = False

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        self.released = True


async def runtime_in_endless_steps() -> tuple[DashboardRuntime, RecordedLease, list[asyncio.Task[None]]]:
    """A started runtime whose two loops are each in a step that does not end by itself."""
    runtime, lease = DashboardRuntime(), RecordedLease()
    entered: list[str] = []

    def endless(name: str) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            entered.append(name)
            await asyncio.Event().wait()

        return step

    runtime.push = endless("push")  # type: ignore[method-assign]
    runtime.produce = endless("produce")  # type: ignore[method-assign]
    await runtime.start()
    runtime.lease = lease
    loops = [task for task in asyncio.all_tasks() if task.get_name().startswith("dashboard-")]
    while len(entered) < 2:  # both steps start within the next second
        await asyncio.sleep(0.05)
    return runtime, lease, loops


def test_a_cancelled_stop_cancels_the_loops_and_raises() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        runtime, lease, loops = await runtime_in_endless_steps()
        # When stop() is cancelled while it waits for the loops' steps
        stopping = asyncio.create_task(runtime.stop())
        await asyncio.sleep(0)  # stop() runs up to its wait
        stopping.cancel()
        # Then it raises at once, the loops are cancelled, and the lease is left to lapse
        await asyncio.wait({stopping}, timeout=1)
        _, running = await asyncio.wait(loops, timeout=1)
        return stopping.cancelled(), not running, lease.released

    assert run_bounded(scenario(), timeout=10, what="the stop") == (True, True, False)


def test_a_step_longer_than_the_stop_timeout_is_cancelled_and_the_lease_released(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_module, "STOP_TIMEOUT_SECONDS", 0.2)

    async def scenario() -> tuple[bool, bool]:
        runtime, lease, loops = await runtime_in_endless_steps()
        # When stop() waits longer than its timeout for the steps
        await runtime.stop()
        # Then it cancelled the loops and released the lease
        _, running = await asyncio.wait(loops, timeout=1)
        return not running, lease.released

    with caplog.at_level(logging.WARNING, logger="sentinel.observability"):
        assert run_bounded(scenario(), timeout=10, what="the stop") == (True, True)
    assert sorted(record.getMessage() for record in caplog.records) == [
        "dashboard loop dashboard-produce did not stop in time",
        "dashboard loop dashboard-push did not stop in time",
    ]

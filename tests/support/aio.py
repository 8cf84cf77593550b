"""`asyncio.run` with deadlines: a test whose event loop does not finish fails in seconds, saying
where it waits, instead of hanging until pytest-timeout's 300 s.

`asyncio.run` waits without bound at two points after its coroutine returns: for the tasks it left,
which it cancels (a task that loses its cancel, as Python 3.11's `asyncio.wait_for` can make it
lose one, never ends), and for the threads of its default executor (`sync_to_async` calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_bounded(main: Coroutine[Any, Any, T], *, timeout: float, what: str, shutdown_timeout: float = 5) -> T:
    """Runs `main` in a new event loop as `asyncio.run` does, within `timeout` seconds; then gives
    the tasks it left `shutdown_timeout` s to end once cancelled, and the loop's worker threads as
    long to finish. Overrunning either fails the test (an AssertionError naming `what`)."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="run-bounded")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(_within(main, timeout, what))
    except BaseException as failure:
        # The scenario's own failure is the one to see; a stuck shutdown is added to it.
        for problem in _close(loop, executor, shutdown_timeout):
            failure.add_note(f"{what}: {problem}")
        raise
    problems = _close(loop, executor, shutdown_timeout)
    if problems:
        raise AssertionError(f"{what}: " + "\n".join(problems))
    return result


async def _within(main: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await main
    except TimeoutError as exc:
        if not deadline.expired():
            raise  # the scenario's own
        # Chained to the cancellation, whose traceback shows where `main` was waiting.
        raise AssertionError(f"{what} did not finish within {timeout} s") from exc


def _close(loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, timeout: float) -> list[str]:
    """Shuts `loop` down as `asyncio.run` does, with `timeout` for each wait; returns what overran."""
    problems = []
    try:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        for task in tasks:
            if not task.done():
                problems.append(
                    f"{task!r} did not end within {timeout} s of being cancelled, awaiting:\n{_awaiting(task)}"
                )
            elif not task.cancelled() and task.exception() is not None:
                message = "unhandled exception during run_bounded() shutdown"  # as asyncio.run reports it
                loop.call_exception_handler({"message": message, "exception": task.exception(), "task": task})
        loop.run_until_complete(loop.shutdown_asyncgens())
        if not loop.run_until_complete(_threads_finish(executor, timeout)):
            problems.append(f"the loop's worker threads were still running {timeout} s after it ended")
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return problems


async def _threads_finish(executor: ThreadPoolExecutor, timeout: float) -> bool:
    """`loop.shutdown_default_executor()` with a timeout (3.12 has one; 3.11 waits for ever)."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def finish() -> None:
        if not finished.done():
            finished.set_result(None)

    def shut_down() -> None:
        executor.shutdown(wait=True)
        with contextlib.suppress(RuntimeError):  # the loop was closed after the timeout
            loop.call_soon_threadsafe(finish)

    threading.Thread(target=shut_down, name="run-bounded-shutdown", daemon=True).start()
    done, _ = await asyncio.wait({finished}, timeout=timeout)
    return bool(done)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """The chain of coroutines `task` is suspended in, outermost first (`Task.get_stack` shows only
    the outermost)."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            lines.append(f"  {awaited!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)

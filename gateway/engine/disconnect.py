"""Noticing that the client left while the forwarder waits on the upstream, without a task per request.

Plain asyncio, no Django. ``gateway.engine.forwarder`` creates one ``DisconnectWatch`` per forward
and, when the watch has fired, swallows the one cancellation it caused (``fired``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

__all__ = ["DisconnectWatch"]

# ASGI's receive(): the next message from the server.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class DisconnectWatch:
    """Cancels the forwarding task when the client goes away.

    ASGI reports a disconnect only through receive(), and one coroutine at a time may read it, so
    the watch starts once the request body has been consumed. It must stop before the final body
    message: uvicorn's receive() answers http.disconnect as soon as a response is complete, which
    is not the client leaving.

    The watching task is only created once the exchange has lasted ``WATCH_DELAY_S``: most proxied
    requests are over by then, and a task per request costs about 10 % of the forwarder's CPU. Nor
    does each watch arm a timer of its own (a uvloop timer armed and cancelled is ~2 µs per
    request): the watches armed on a loop wait in one queue, in the order they were armed, which is
    the order they fall due, behind one timer (`_DueQueue`). A client that leaves is noticed that
    much later at worst, unless the forwarder calls ``hurry``: time does not bound what is relayed
    in the meantime, since uvicorn's send() returns at once for a client that has left (no
    backpressure) and a local upstream fills those 50 ms with hundreds of megabytes, enough to
    finish a download the client gave up on and report it ``ok``.
    """

    WATCH_DELAY_S: Final = 0.05

    __slots__ = ("_armed", "_closed", "_due", "_receive", "_target", "_task", "fired")

    def __init__(self, receive: Receive) -> None:
        """Watch ``receive`` on behalf of the task running now (the one a disconnect cancels)."""
        self._receive = receive
        self._target = asyncio.current_task()
        self._due = 0.0  # loop time at which the watching task starts, once armed
        self._armed = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.fired = False

    def start(self) -> None:
        """Arm the watch (idempotent; a no-op once stopped)."""
        # Called from the body generator too, possibly after the forward has already finished.
        if not self._closed and not self._armed:
            self._armed = True
            _due_queue(asyncio.get_running_loop()).add(self)

    def hurry(self) -> None:
        """Start watching now rather than at the end of the delay, if the watch is armed.

        A no-op before ``start`` (the request body may still be reading receive()), once the
        watching task exists, and once stopped.
        """
        if self._task is None and self._armed and not self._closed:
            self._begin()

    def stop(self) -> None:
        """Disarm it for good: no cancellation can come from this watch afterwards."""
        # The queue drops a stopped watch when it falls due: nothing to remove here.
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _begin(self) -> None:
        if not self._closed and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        # stop() and this check run without an await in between, so a watch that was stopped can
        # never cancel a task that has moved on to other work.
        if not self._closed and self._target is not None:
            self.fired = True
            self._target.cancel()


class _DueQueue:
    """The watches armed on one event loop, oldest first, and the one timer for the oldest.

    Every watch waits the same ``WATCH_DELAY_S``, so the order of arming is the order of falling
    due: adding is an append, and the timer only ever needs the head's time. A stopped watch stays
    queued until its time (at most ``WATCH_DELAY_S``) and is then dropped.
    """

    __slots__ = ("loop", "timer", "watches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: deque[DisconnectWatch] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, watch: DisconnectWatch) -> None:
        watch._due = due = self.loop.time() + DisconnectWatch.WATCH_DELAY_S
        self.watches.append(watch)
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        watches = self.watches
        # uvloop's clock and timers have millisecond resolution: a timer may run up to 1 ms early.
        now = self.loop.time() + _CLOCK_SLACK_S
        while watches and watches[0]._due <= now:
            watches.popleft()._begin()
        if watches:
            self.timer = self.loop.call_at(watches[0]._due, self._fire)


# uvloop's clock and timers have millisecond resolution (as in gateway.engine.resp_connection).
_CLOCK_SLACK_S: Final = 0.001
# Each loop's queue. Weak: a loop that is closed and dropped (a test's) takes its queue with it.
_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DueQueue] = weakref.WeakKeyDictionary()
_last: _DueQueue | None = None  # the queue found last: a process serves from one loop


def _due_queue(loop: asyncio.AbstractEventLoop) -> _DueQueue:
    """`loop`'s queue of armed watches, made on first use."""
    global _last
    queue = _last
    if queue is None or queue.loop is not loop:
        queue = _QUEUES.get(loop)
        if queue is None:
            queue = _QUEUES[loop] = _DueQueue(loop)
        _last = queue
    return queue

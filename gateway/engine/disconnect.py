"""Noticing that the client left while the forwarder waits on the upstream, without a task per request.

Plain asyncio, no Django. ``gateway.engine.forwarder`` creates one ``DisconnectWatch`` per forward
and, when the watch has fired, swallows the one cancellation it caused (``fired``).
"""

from __future__ import annotations

import asyncio
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
    requests are over by then, and a task per request costs about 10 % of the forwarder's CPU (a
    timer handle costs next to nothing). A client that leaves is noticed that much later at worst,
    unless the forwarder calls ``hurry``: time does not bound what is relayed in the meantime, since
    uvicorn's send() returns at once for a client that has left (no backpressure) and a local
    upstream fills those 50 ms with hundreds of megabytes, enough to finish a download the client
    gave up on and report it ``ok``.
    """

    WATCH_DELAY_S: Final = 0.05

    __slots__ = ("_closed", "_receive", "_target", "_task", "_timer", "fired")

    def __init__(self, receive: Receive) -> None:
        """Watch ``receive`` on behalf of the task running now (the one a disconnect cancels)."""
        self._receive = receive
        self._target = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.fired = False

    def start(self) -> None:
        """Arm the watch (idempotent; a no-op once stopped)."""
        # Called from the body generator too, possibly after the forward has already finished.
        if not self._closed and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.WATCH_DELAY_S, self._begin)

    def hurry(self) -> None:
        """Start watching now rather than at the end of the delay, if the watch is armed.

        A no-op before ``start`` (the request body may still be reading receive()), once the
        watching task exists, and once stopped.
        """
        if self._task is None and self._timer is not None and not self._closed:
            self._timer.cancel()
            self._begin()

    def stop(self) -> None:
        """Disarm it for good: no cancellation can come from this watch afterwards."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _begin(self) -> None:
        if not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        # stop() and this check run without an await in between, so a watch that was stopped can
        # never cancel a task that has moved on to other work.
        if not self._closed and self._target is not None:
            self.fired = True
            self._target.cancel()

"""channels_redis' channel layer, with a `receive` that ends when it is cancelled.

redis-py sends every command through `asyncio.wait_for` (its write timeout), and on Python 3.11
`wait_for` returns instead of raising when its task is cancelled in the loop turn in which the send
completes (CPython gh-86296; 3.12 rewrote `wait_for` on `asyncio.timeout`). channels_redis'
`receive` then loses the cancel and block-pops for good. A consumer cancels its receive when its
socket closes and waits for it, so it never ends either. A socket refused at the handshake closes a
few loop turns after its receive sent its first commands: its consumer was left running 37 times in
40 (a test loop), after which a web process's shutdown waited out uvicorn's graceful timeout, and
`asyncio.run`, which has none, waited for ever (a test hung at pytest-timeout's 300 s).

Here the upstream receive runs in a task of its own, which the caller's task only awaits. That one,
what gets cancelled, takes every cancel and raises at once; the upstream task is then cancelled, and
cancelled again until it ends: a repeat lands in the blocking pop, where it is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import RedisChannelLayer as UpstreamRedisChannelLayer

logger = logging.getLogger("sentinel.core")

# A lost cancel is repeated this often; a repeat can only be lost in the instant a send completes.
RECANCEL_SECONDS = 0.05
# After this long the repeats stop, and the receive is left running (logged).
GIVE_UP_SECONDS = 5


class RedisChannelLayer(UpstreamRedisChannelLayer):  # type: ignore[misc]
    """See the module. Configured as the `CHANNEL_LAYERS` backend when Redis is."""

    async def receive(self, channel: str) -> dict[str, Any]:
        receiving = asyncio.ensure_future(super().receive(channel))
        try:
            message: dict[str, Any] = await asyncio.shield(receiving)
        except asyncio.CancelledError:
            _cancel_until_done(receiving, asyncio.get_running_loop().time() + GIVE_UP_SECONDS)
            raise
        return message


def _cancel_until_done(task: asyncio.Future[Any], deadline: float) -> None:
    """Cancels `task` now and every RECANCEL_SECONDS until it is done; from loop callbacks, not a
    task, so the caller's cancel is not held up and a further cancel cannot stop the repeats."""
    if task.done():
        return
    loop = task.get_loop()
    if loop.time() > deadline:
        logger.warning("a channel layer receive did not end %s s after it was cancelled", GIVE_UP_SECONDS)
        return
    task.cancel()
    loop.call_later(RECANCEL_SECONDS, _cancel_until_done, task, deadline)

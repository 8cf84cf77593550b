"""core.channel_layer: a receive on the Redis layer ends when it is cancelled, whenever the cancel
lands (on Python 3.11, channels_redis' own loses one that lands as a command's send completes)."""

from __future__ import annotations

import asyncio

from core.channel_layer import RedisChannelLayer
from tests.support.aio import run_bounded
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

# Loop turns between a receive's start and its cancel: its first commands' sends happen in these.
TURNS = 40


def test_a_receive_cancelled_in_any_loop_turn_of_its_first_commands_leaves_nothing_running() -> None:
    layer = RedisChannelLayer(
        hosts=[{"address": require_redis(), "socket_timeout": 10}], prefix=f"{key_prefix('layer')}:channels"
    )

    async def cancel_receives() -> list[int]:
        lingering = []
        for turns in range(TURNS):
            # Given a consumer's receive on its own channel, nothing sent to it
            receiving = asyncio.ensure_future(layer.receive(await layer.new_channel()))
            for _ in range(turns):
                await asyncio.sleep(0)
            # When it is cancelled (as a consumer does when its socket closes)
            receiving.cancel()
            # Then it ends at once, and so does every task it started: not after the blocking pop
            # (5 s), nor never
            started = asyncio.all_tasks() - {asyncio.current_task()}
            _, running = await asyncio.wait(started, timeout=1)
            if running:
                lingering.append(turns)
                for task in running:
                    task.cancel()  # again, for the next turn to start clean
                await asyncio.wait(running, timeout=2)
        return lingering

    assert run_bounded(cancel_receives(), timeout=60, what="the receives") == []

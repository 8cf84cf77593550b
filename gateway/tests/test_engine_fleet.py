"""Fleet pressure through the real Redis: several processes' reports, stale ones dropped."""

from __future__ import annotations

import asyncio

from gateway.engine.fleet import FleetPressure
from gateway.engine.resp import gateway_redis_client
from tests.support.net import free_port
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis


def test_processes_see_each_others_pressure_and_forget_the_dead() -> None:
    url = require_redis()
    prefix = f"{key_prefix('fleet')}:"

    async def scenario() -> tuple[list[float] | None, list[float] | None]:
        redis = gateway_redis_client(url)
        try:
            a = FleetPressure(redis, prefix, me="a", stale_ms=1000)
            b = FleetPressure(redis, prefix, me="b", stale_ms=1000)
            await a.exchange(80.0, now_ms=10_000)
            together = await b.exchange(20.0, now_ms=10_500)
            alone = await b.exchange(30.0, now_ms=12_000)  # a stopped reporting 2 s ago
            left = await redis.execute("HKEYS", f"{prefix}pressure")
            await redis.execute("DEL", f"{prefix}pressure")
            assert left == [b"b"]
            return together, alone
        finally:
            await redis.aclose()

    together, alone = asyncio.run(scenario())

    assert sorted(together or []) == [20.0, 80.0]
    assert alone == [30.0]


def test_an_unreachable_redis_gives_none() -> None:
    async def scenario() -> list[float] | None:
        redis = gateway_redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
        try:
            return await FleetPressure(redis, "x:").exchange(10.0)
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()) is None

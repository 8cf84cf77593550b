"""Circuit-breaker state for the admin, the API and the dashboard (the Django side).

In production the state lives in Redis, so any process can read and reset it with a client of
its own. In embedded mode it lives in the web process's proxy (`gateway.runtime.active_proxy`),
which is the process serving the admin and the API too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from core.conf import sentinel_settings
from gateway import runtime
from gateway.engine.breaker import STATE_CODES, Breaker, MemoryBreaker, RedisBreaker, Transition
from gateway.engine.ratelimit import limiter_redis_client


@contextlib.asynccontextmanager
async def _breaker() -> AsyncIterator[Breaker]:
    conf = sentinel_settings.gateway
    if settings.REDIS_URL:
        # A client of this event loop's own: the proxy's clients belong to the server's loop.
        redis = limiter_redis_client(settings.REDIS_URL)
        try:
            yield RedisBreaker(redis, f"{settings.CACHE_KEY_PREFIX}:gw:", runtime.breaker_config_from(conf))
        finally:
            await redis.aclose()
    elif runtime.active_proxy is not None:
        yield runtime.active_proxy.breaker
    else:  # no proxy in this process (a shell, a test client): nothing has tripped here
        yield MemoryBreaker(runtime.breaker_config_from(conf))


def breaker_states(upstreams: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each upstream's breaker as JSON-ready dicts, in one round trip."""

    async def read() -> dict[str, dict[str, Any]]:
        async with _breaker() as breaker:
            states = await breaker.states(list(upstreams))
        return {url: {**asdict(state), "state_code": STATE_CODES[state.state]} for url, state in states.items()}

    return async_to_sync(read)()


def breaker_reset(*, upstream: str) -> Transition | None:
    """Forces the upstream's breaker closed (an operator's decision after fixing the upstream)."""

    async def reset() -> Transition | None:
        async with _breaker() as breaker:
            return await breaker.reset(upstream)

    return async_to_sync(reset)()

"""Circuit-breaker state for the admin, the API and the metrics (the Django side of the breakers).

In production the state lives in Redis, so any process reads and resets it with a client of its
own. In embedded mode it lives in this process's memory (`process_breaker()`): the proxy records
into that breaker, and the admin and the API of the same process read and reset it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils.module_loading import import_string

from core.conf import GatewaySettings, sentinel_settings
from gateway.engine.breaker import (
    STATE_CODES,
    Breaker,
    BreakerConfig,
    MemoryBreaker,
    RedisBreaker,
    Transition,
    breaker_for_a_moment,
)
from gateway.engine.resp import RespClient


@functools.cache
def process_breaker() -> MemoryBreaker:
    """This process's breakers when there is no Redis (embedded mode), one instance per process:
    the proxy built here records into it, and `breaker_store()` hands it to the admin and the API.
    Nothing trips it in a process that serves no proxy (a shell, a test client): all closed."""
    conf = sentinel_settings.gateway
    return MemoryBreaker(breaker_config_from(conf), probe_ttl_ms=conf.REQUEST_TIMEOUT_MS)


def breaker_store() -> contextlib.AbstractAsyncContextManager[Breaker]:
    """The deployment's breakers, for use on the running event loop (`breaker_for_a_moment`): a
    `RedisBreaker` with REDIS_URL, else `process_breaker()`."""

    def on_redis(redis: RespClient) -> Breaker:
        return RedisBreaker(redis, f"{settings.CACHE_KEY_PREFIX}:gw:", breaker_config_from(sentinel_settings.gateway))

    return breaker_for_a_moment(settings.REDIS_URL, on_redis, process_breaker)


def breaker_config_from(conf: GatewaySettings) -> BreakerConfig:
    """The breaker's numbers (SPEC 2 step 8) SENTINEL_GATEWAY gives; its window keeps the engine's default."""
    return BreakerConfig(
        failure_threshold=conf.BREAKER_FAILURE_THRESHOLD,
        min_volume=conf.BREAKER_CONSECUTIVE_FAILURES,
        cooldown_ms=conf.BREAKER_COOLDOWN_MS,
        half_open_max=conf.BREAKER_HALF_OPEN_MAX_REQUESTS,
    )


def breaker_states(upstreams: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each upstream URL's breaker, in one round trip, as JSON-ready dicts: `{url: {"state":
    "closed" | "open" | "half_open", "state_code": 0 | 1 | 2, "failures": int, "total": int (the
    window's calls), "opened_at_ms": int | None (epoch ms), "probes_in_flight": int}}`. An upstream
    never seen reads as closed. Raises `BreakerUnavailable` when Redis does not answer."""

    async def read() -> dict[str, dict[str, Any]]:
        async with breaker_store() as breaker:
            states = await breaker.states(list(upstreams))
        return {url: {**asdict(state), "state_code": STATE_CODES[state.state]} for url, state in states.items()}

    return async_to_sync(read)()


def breaker_reset(*, upstream: str) -> Transition | None:
    """Forces the upstream's breaker closed (an operator's decision after fixing the upstream).

    Empties its window either way; returns the transition, or None when it was closed already.
    Raises `BreakerUnavailable` when Redis does not answer."""

    async def reset() -> Transition | None:
        async with breaker_store() as breaker:
            return await breaker.reset(upstream)

    return async_to_sync(reset)()


def circuit_sources() -> list[Any]:
    """The other breakers SENTINEL_CIRCUIT_SOURCES names (the fraud brain's), by dotted path so the
    gateway imports none of their apps: objects with `entries(*, is_staff) -> list[dict]` (each
    with `name` and the state fields of `breaker_states`) and `reset(upstream) -> (reset, entry)
    | None`."""
    return [import_string(path) for path in getattr(settings, "SENTINEL_CIRCUIT_SOURCES", ())]

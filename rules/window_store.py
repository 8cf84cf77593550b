"""Which store the DSL's time windows keep their state in, chosen from the settings: Redis when
there is one, shared by every worker; this process's memory in embedded mode (one worker process
evaluates there). The stores themselves are Django-free, in ``rules.dsl.windows``."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from rules.dsl import MemoryWindowStore, RedisWindowStore, WindowStore


@lru_cache(maxsize=1)
def window_store() -> WindowStore:
    """This process's window store, made once (a Redis client with 2 s timeouts, or memory)."""
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return RedisWindowStore(client, prefix=f"{settings.CACHE_KEY_PREFIX}:rules:win:")
    return MemoryWindowStore()

"""The configuration version: one number every web process polls to know when to reload.

Any change to what the running proxies hold (routes, upstreams, tenants, API keys, users) bumps it
after its transaction commits (``transaction.on_commit(config_version_bump)``);
``gateway.runtime`` reads it every ``CONFIG_REFRESH_SECONDS`` and reloads when it moved. It lives
on the ground floor so that accounts can announce a change without knowing who listens.
"""

from __future__ import annotations

import time

from django.core.cache import cache

CONFIG_VERSION_KEY = "gateway:config_version"


def config_version_bump() -> None:
    """Moves the version (atomic ``INCR`` in the shared cache). Never raises: with the cache down
    it writes the time in milliseconds, which still differs from what the processes last saw."""
    try:
        if cache.add(CONFIG_VERSION_KEY, 1, timeout=None):
            return
        cache.incr(CONFIG_VERSION_KEY)
    except Exception:  # noqa: BLE001 - a dead cache must not fail the admin's save
        cache.set(CONFIG_VERSION_KEY, int(time.time() * 1000), timeout=None)


def config_version_read() -> int:
    """The current version; 0 before the first change. Raises what the cache raises when down."""
    return int(cache.get(CONFIG_VERSION_KEY, 0))

"""Keeping a test run's keys apart in a Redis that others use too (``make run``, another run).

Every key a test run writes starts with this run's root, ``test-<8 hex>``: keys a test writes
itself, and those of the processes it starts (web, worker, consumer), whose ``CACHE_KEY_PREFIX``
names the cache's, the channel layer's and Celery's keys. ``key_prefix()`` hands out one prefix
under the root and the plugin deletes its keys after the test that asked for it
(``lasting_key_prefix()``: when the session ends, for wider fixtures); the test process itself,
and children started without a prefix of their own, share ``site_prefix()``, deleted when the
session ends. The plugin then compares the databases with what they held
before the session: a key left under the root is a leak and fails the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

# One per pytest process: every prefix of this run starts with it, and nothing else does.
RUN_ROOT = f"test-{uuid.uuid4().hex[:8]}"

_issued: list[str] = []  # by key_prefix, swept after the test
_lasting: list[str] = []  # by lasting_key_prefix, swept after the session


def key_prefix(label: str) -> str:
    """A fresh key prefix under this run's root, ``test-<run>-<label>-<8 hex>`` (no trailing
    colon: as a ``CACHE_KEY_PREFIX`` the cache adds one; add your own for bare keys).

    Keys starting with it are deleted after the current test, so ask for it in a test or a
    function-scoped fixture, never at import or in a wider fixture.
    """
    prefix = f"{RUN_ROOT}-{label}-{uuid.uuid4().hex[:8]}"
    _issued.append(prefix)
    return prefix


def lasting_key_prefix(label: str) -> str:
    """A fresh key prefix under this run's root, like ``key_prefix``, for a module- or
    session-scoped fixture: its keys are deleted when the session ends."""
    prefix = f"{RUN_ROOT}-{label}-{uuid.uuid4().hex[:8]}"
    _lasting.append(prefix)
    return prefix


def site_prefix() -> str:
    """The ``CACHE_KEY_PREFIX`` of the test process and of children started without their own
    (``test-<run>-site``); its keys live until the session ends."""
    return f"{RUN_ROOT}-site"


def take_issued() -> list[str]:
    """The prefixes ``key_prefix`` handed out since the last call (the list is emptied)."""
    issued = list(_issued)
    _issued.clear()
    return issued


def session_prefixes() -> list[str]:
    """The prefixes whose keys live until the session ends: ``site_prefix()`` and every
    ``lasting_key_prefix``."""
    return [site_prefix(), *_lasting]


def databases_of(url: str) -> list[int]:
    """The database numbers tests use on that server: the URL's, and 0 and 1 (the RESP client's
    tests select both)."""
    path = urlsplit(url).path.strip("/")
    return sorted({int(path) if path.isdigit() else 0, 0, 1})


def with_database(url: str, db: int) -> str:
    """``url`` pointing at database ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def keys_by_database(url: str) -> dict[int, set[bytes]] | None:
    """Every key name of the test databases (``SCAN``, never ``KEYS``), or None when no Redis
    answers at ``url``."""
    import redis

    found: dict[int, set[bytes]] = {}
    try:
        for db in databases_of(url):
            with redis.Redis.from_url(with_database(url, db), socket_connect_timeout=1, socket_timeout=10) as client:
                found[db] = set(client.scan_iter(count=1000))
    except redis.RedisError:
        return None
    return found


def delete_under(url: str, prefixes: Iterable[str]) -> int:
    """Deletes, in every test database, the keys whose names start with one of ``prefixes``.
    Returns how many; 0 when no Redis answers."""
    import redis

    prefixes = list(prefixes)
    deleted = 0
    if not prefixes:
        return deleted
    try:
        for db in databases_of(url):
            with redis.Redis.from_url(with_database(url, db), socket_connect_timeout=1, socket_timeout=10) as client:
                for prefix in prefixes:
                    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                    if keys:
                        deleted += int(client.delete(*keys))
    except redis.RedisError:
        return deleted
    return deleted

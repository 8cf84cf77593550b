"""The real services tests need (Redis, the test database): where they are, and skip-or-fail when
one is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_unavailable(reason: str) -> NoReturn:
    """Skips a test whose service is missing; in CI (CI=true) fails it instead (SPEC 0)."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def redis_url_for_tests() -> str:
    """The Redis tests use: ``REDIS_URL`` when set, else the machine's on 127.0.0.1:6379, db 0."""
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def require_redis() -> str:
    """The Redis URL tests use, after checking the server answers (skips, or fails in CI, if not).

    Keys a test writes there go under a prefix from ``tests.support.redis_keys.key_prefix``.
    """
    import redis

    url = redis_url_for_tests()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to answer means "not reachable"
        service_unavailable(f"Redis is not reachable at {url}: {exc}")
    return url


def database_url_of(settings_dict: Mapping[str, Any]) -> str:
    """A DATABASE_URL for another process to reach the database the tests use (a Django
    ``DATABASES`` entry in, ``sqlite:///path`` or ``postgres://user@host:port/name`` out)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"

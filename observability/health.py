"""The component checks behind `GET /health` (SPEC 7).

Each check returns a small dict with at least `status` ("ok", "down" or "skipped") and never
raises; `critical` checks decide between 200 and 503, the others only inform.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from observability.selectors import heartbeat_last

Check = dict[str, Any]
# A worker heartbeat older than this (beat sends one every 15 s) means no worker is consuming.
HEARTBEAT_STALE_SECONDS = 60


def _timed(probe: Callable[[], Check]) -> Check:
    started = time.perf_counter()
    try:
        result = probe()
    except Exception as exc:  # noqa: BLE001 - a health check reports failures, it does not raise them
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    result.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 2))
    return result


def check_database() -> Check:
    def probe() -> Check:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"status": "ok", "vendor": connection.vendor}

    return _timed(probe)


def _ping_redis(url: str) -> Check:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry_on_timeout=False)
    try:
        client.ping()
    finally:
        client.close()
    return {"status": "ok"}


def check_redis() -> Check:
    if not settings.REDIS_URL:
        return {"status": "skipped", "detail": "embedded mode: REDIS_URL is not set"}
    return _timed(lambda: _ping_redis(settings.REDIS_URL))


def check_broker() -> Check:
    url: str = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {**_timed(lambda: _ping_redis(url)), "transport": "redis"}

    def probe() -> Check:
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
        if not os.access(folder, os.W_OK):
            return {"status": "down", "error": f"queue folder {folder} is not writable"}
        return {"status": "ok"}

    return {**_timed(probe), "transport": "filesystem"}


def check_worker() -> Check:
    def probe() -> Check:
        last = heartbeat_last()
        if last is None:
            return {"status": "unknown", "detail": "no worker heartbeat yet"}
        age = (timezone.now() - last).total_seconds()
        return {"status": "ok" if age <= HEARTBEAT_STALE_SECONDS else "stale", "last_heartbeat_seconds": round(age, 1)}

    return _timed(probe)


CRITICAL_CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}
INFORMATIVE_CHECKS: dict[str, Callable[[], Check]] = {"worker": check_worker}


def app_checks() -> dict[str, Callable[[], Check]]:
    """The informative checks apps contribute through SENTINEL_HEALTH_COMPONENTS ({name: dotted
    path}), imported by name so observability imports none of those apps (docs/architecture.md).
    A check that does not import, or raises, reports `down` instead of failing the report."""

    def loaded(path: str) -> Callable[[], Check]:
        def check() -> Check:
            return _timed(lambda: import_string(path)())

        return check

    return {name: loaded(path) for name, path in getattr(settings, "SENTINEL_HEALTH_COMPONENTS", {}).items()}


def health_report() -> tuple[bool, dict[str, Any]]:
    """(healthy, report). Healthy when no critical component is down."""
    checks = {**CRITICAL_CHECKS, **INFORMATIVE_CHECKS, **app_checks()}
    components = {name: check() for name, check in checks.items()}
    healthy = all(components[name]["status"] in ("ok", "skipped") for name in CRITICAL_CHECKS)
    report = {
        "status": "ok" if healthy else "unhealthy",
        "mode": "embedded" if settings.EMBEDDED_MODE else "production",
        "components": components,
    }
    return healthy, report

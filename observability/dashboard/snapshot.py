"""The dashboard's snapshot: one JSON document per scope and second, the same on the websocket and
at `GET /stats/dashboard`.

Shape (version 1)::

    {"version": 1, "at": epoch s, "scope": {"tenant": slug | null},
     "traffic": {"requests_per_minute", "requests_per_second" (last second), "error_rate" (5xx
                 share of the minute, 0-1), "status": {"2xx_3xx", "4xx", "5xx"}, "s429", "s503",
                 "latency_ms": {"p50", "p95", "p99"} (ms or null)},
     "series": {"t": [epoch s] * 60, "requests", "errors", "s429", "s503", "p50", "p95", "p99"},
     "top_tenants": [{"tenant", "requests"}] (fleet view only), "top_routes": [{"route", "requests"}],
     "fleet": {"processes", "in_flight", "pressure" (0-100, the highest process's)},
     "tiles": [{"key", "title", "status", "figures", "rows", "empty", "error"?}]}

A tenant's view is computed from that tenant's part of each bucket only (its counts, its routes)
and its tiles are called with its scope: nothing of another tenant is in it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.tiles import DashboardScope, dashboard_tiles
from observability.dashboard.fleet import FleetWindow
from observability.dashboard.live import OTHER, WINDOW_SECONDS, Bucket, Counts, percentile

logger = logging.getLogger("sentinel.observability")

SNAPSHOT_VERSION = 1
TOP_N = 5


def snapshot_build(*, scope: DashboardScope, window: FleetWindow, tenant_slugs: dict[str, str]) -> dict[str, Any]:
    """The snapshot of `scope` over `window` (see the module for its shape). `tenant_slugs` maps
    tenant UUIDs to slugs, for the top tenants. Runs the tiles, so call it from a worker thread."""
    per_second = [_counts_of(window.seconds.get(second), scope) for second in _seconds(window)]
    minute = Counts()
    for counts in per_second:
        minute.merge(counts)
    return {
        "version": SNAPSHOT_VERSION,
        "at": window.now,
        "scope": {"tenant": scope.tenant_slug},
        "traffic": _traffic(minute, per_second[-1]),
        "series": _series(window, per_second),
        "top_tenants": [] if not scope.fleet else _top_tenants(window, tenant_slugs),
        "top_routes": _top_routes(window, scope),
        "fleet": _fleet(window),
        "tiles": tiles_render(scope),
    }


def _seconds(window: FleetWindow) -> range:
    return range(window.now - WINDOW_SECONDS, window.now)


def _counts_of(bucket: Bucket | None, scope: DashboardScope) -> Counts:
    if bucket is None:
        return Counts()
    if scope.fleet:
        return bucket.total
    return bucket.tenants.get(str(scope.tenant_uuid)) or Counts()


def _traffic(minute: Counts, last: Counts) -> dict[str, Any]:
    return {
        "requests_per_minute": minute.requests,
        "requests_per_second": last.requests,
        "error_rate": round(minute.errors / minute.requests, 4) if minute.requests else 0.0,
        "status": {
            "2xx_3xx": minute.requests - minute.errors - minute.client_errors,
            "4xx": minute.client_errors,
            "5xx": minute.errors,
        },
        "s429": minute.s429,
        "s503": minute.s503,
        "latency_ms": {name: _rounded(percentile(minute.latency, q)) for name, q in _QUANTILES},
    }


_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def _series(window: FleetWindow, per_second: list[Counts]) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {"t": list(_seconds(window))}
    series["requests"] = [c.requests for c in per_second]
    series["errors"] = [c.errors for c in per_second]
    series["s429"] = [c.s429 for c in per_second]
    series["s503"] = [c.s503 for c in per_second]
    for name, q in _QUANTILES:
        series[name] = [_rounded(percentile(c.latency, q)) for c in per_second]
    return series


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _top_tenants(window: FleetWindow, tenant_slugs: dict[str, str]) -> list[dict[str, Any]]:
    totals: dict[str, int] = {}
    for bucket in window.seconds.values():
        for key, counts in bucket.tenants.items():
            totals[key] = totals.get(key, 0) + counts.requests
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]
    return [{"tenant": _tenant_label(key, tenant_slugs), "requests": count} for key, count in ranked]


def _tenant_label(key: str, tenant_slugs: dict[str, str]) -> str:
    """A tenant's slug; anonymous callers by their limiter key (`ip:…`), staff by `user:<id>`."""
    return tenant_slugs.get(key, key)


def _top_routes(window: FleetWindow, scope: DashboardScope) -> list[dict[str, Any]]:
    mine = f"{scope.tenant_uuid}|"
    totals: dict[str, int] = {}
    for bucket in window.seconds.values():
        for key, count in bucket.routes.items():
            if scope.fleet or key.startswith(mine):
                route = key.partition("|")[2]
                totals[route] = totals.get(route, 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]
    return [{"route": route if route != OTHER else "(other routes)", "requests": n} for route, n in ranked]


def _fleet(window: FleetWindow) -> dict[str, Any]:
    gauges = window.gauges
    return {
        "processes": len(gauges),
        "in_flight": sum(g.in_flight for g in gauges),
        "pressure": round(max((g.pressure for g in gauges), default=0.0), 1),
    }


# Tiles failing now, by (tile key, scope's tenant UUID or None): how many renders in a row failed.
_failing: dict[tuple[str, str | None], int] = {}
_failing_lock = threading.Lock()


def tiles_render(scope: DashboardScope) -> list[dict[str, Any]]:
    """Every registered tile's data for `scope`, in the setting's order. A tile that raises is
    shown with `error` set; the others are unaffected.

    A failure is logged once per episode, per tile and scope: the first with its traceback
    (ERROR), then nothing while the same tile keeps failing for that scope (the renders are
    counted; a tile runs every second, and a database outage would otherwise log one traceback
    per tile per second), then one WARNING line with the count when it renders again."""
    rendered: list[dict[str, Any]] = []
    for tile in dashboard_tiles():
        head = {"key": tile.key, "title": tile.title}
        episode = (tile.key, scope.tenant_uuid)
        started = time.perf_counter()
        try:
            rendered.append({**head, **tile(scope)})
        except Exception:
            if _failure_count(episode) == 1:
                logger.exception(
                    "dashboard tile %s failed for %s; quiet until it renders again", tile.key, _scope_name(scope)
                )
            rendered.append({**head, "status": "idle", "figures": [], "rows": [], "empty": "", "error": True})
        else:
            failures = _recovered(episode)
            if failures:
                logger.warning(
                    "dashboard tile %s renders again for %s after %d failed renders",
                    tile.key,
                    _scope_name(scope),
                    failures,
                )
        elapsed = time.perf_counter() - started
        if elapsed > 0.25:  # a tile is called every second: a slow one delays every viewer
            logger.warning("dashboard tile %s took %.0f ms", tile.key, elapsed * 1000)
    return rendered


def _failure_count(episode: tuple[str, str | None]) -> int:
    """Counts one more failed render of `episode`; returns the count (1: a new episode)."""
    with _failing_lock:
        _failing[episode] = _failing.get(episode, 0) + 1
        return _failing[episode]


def _recovered(episode: tuple[str, str | None]) -> int:
    """Ends `episode`; returns how many renders failed in it (0: it was not failing)."""
    with _failing_lock:
        return _failing.pop(episode, 0)


def _scope_name(scope: DashboardScope) -> str:
    return "the fleet" if scope.fleet else f"tenant {scope.tenant_slug or scope.tenant_uuid}"

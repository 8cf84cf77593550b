"""Builds the proxy from the settings and keeps its routes and tenants fresh (the Django side).

The engine never queries the database per request: this runtime loads routes and tenants once,
then polls the configuration version (a cache key every change moves; Redis in production, so
all processes see it) every `REFRESH_SECONDS` and reloads when it moved — SPEC 2.2's "within 1 s
on every instance". API keys are looked up by hash on a miss and cached by the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from prometheus_client import multiprocess

from core.conf import GatewaySettings, sentinel_settings
from core.config_version import config_version_read
from core.egress import EgressDenied
from core.egress_django import egress_policy, egress_refusal_record
from core.prometheus import forget_dead_processes, process_identifier
from gateway.breaker_state import breaker_config_from, process_breaker
from gateway.engine.auth import ApiKeyResolver, Authenticator, JwtVerifier, KeyInfo, TenantDirectory
from gateway.engine.breaker import MemoryBreaker, RedisBreaker
from gateway.engine.fleet import FleetPressure
from gateway.engine.forwarder import Forwarder
from gateway.engine.gate import RedisGate
from gateway.engine.pressure import PressureGauge, TierAdmission
from gateway.engine.proxy import ASGIApp, GatewayConfig, Proxy, RequestRecord
from gateway.engine.ratelimit import MemoryWindowLimiter, RedisWindowLimiter
from gateway.engine.resp import gateway_redis_client
from gateway.engine.routes import RouteTable
from gateway.engine.traced_proxy import TracedProxy
from gateway.engine.tracing import Tracer
from gateway.selectors import api_key_info, inactive_user_ids, route_specs, tenant_infos

logger = logging.getLogger("sentinel.gateway")

REFRESH_SECONDS = 0.5
_NEVER_LOADED = object()

# What the site hands in (sentinel_site/asgi.py): the gateway counts nothing by itself.
RequestSink = Callable[[RequestRecord], None]


class GaugeSink(Protocol):
    """Takes this process's sampled gauges: requests in flight, and pressure 0-100."""

    def __call__(self, *, in_flight: int, pressure: float) -> None: ...


def request_sinks(*sinks: RequestSink) -> RequestSink:
    """One `on_complete` that hands each record to every sink in turn (the metrics, the request
    log). A sink that raises is logged and the next ones still run: one observer failing must not
    cost another its record. One sink is returned as it is (no extra call per request)."""
    if len(sinks) == 1:
        return sinks[0]

    def fan_out(record: RequestRecord) -> None:
        for sink in sinks:
            try:
                sink(record)
            except Exception:
                logger.exception("request sink %r failed", sink)

    return fan_out


def _with_connection_cleanup(function: Any) -> Any:
    """Runs an ORM read in a worker thread and closes connections it left (no request cycle here)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(wrapper, thread_sensitive=False)


_load_routes = _with_connection_cleanup(route_specs)
_load_tenants = _with_connection_cleanup(tenant_infos)
_load_inactive_users = _with_connection_cleanup(inactive_user_ids)
_load_key = _with_connection_cleanup(lambda digest: api_key_info(key_hash=digest))
_load_version = sync_to_async(config_version_read, thread_sensitive=False)


async def lookup_key(digest: str) -> KeyInfo | None:
    return await _load_key(digest)


def gateway_config() -> GatewayConfig:
    conf = sentinel_settings.gateway
    return GatewayConfig(
        tenant_header=conf.TENANT_HEADER,
        burst_capacity=conf.BURST_CAPACITY,
        refill_rate=conf.REFILL_RATE,
        window_ms=conf.WINDOW_MS,
        base_rate_limit=conf.BASE_RATE_LIMIT,
        request_timeout_ms=conf.REQUEST_TIMEOUT_MS,
        rate_limit_fail_mode=conf.RATE_LIMIT_FAIL_MODE,
        forced_pressure=conf.FORCED_PRESSURE,
        trusted_proxy_count=settings.TRUSTED_PROXY_COUNT,
    )


def pressure_gauge(conf: GatewaySettings) -> PressureGauge:
    """The pressure gauge SENTINEL_GATEWAY describes (the formula: gateway/engine/pressure.py)."""
    return PressureGauge(
        capacity=conf.CAPACITY,
        slo_ms=conf.SLO_LATENCY_THRESHOLD,
        smoothing_s=conf.PRESSURE_SMOOTHING_MS / 1000,
        window_s=conf.PRESSURE_WINDOW_S,
        min_samples=conf.PRESSURE_MIN_SAMPLES,
        min_rate=conf.PRESSURE_MIN_RATE,
        strain_weight=conf.PRESSURE_STRAIN_WEIGHT,
    )


def _egress_refused(tenant_uuid: str | None, target: str, denied: EgressDenied) -> None:
    egress_refusal_record(kind="route", stage="connect", tenant=tenant_uuid, target=target, denied=denied)


def build_proxy(fallback: ASGIApp, *, on_complete: RequestSink, tracer: Tracer | None = None) -> Proxy:
    """The proxy wired for the current mode: Redis-backed state in production, in-process otherwise
    (its breakers are then `breaker_state.process_breaker()`, which the admin and the API read).

    `fallback` serves the paths no route matches; `on_complete` receives every proxied request's
    record, rejections included (`request_sinks` makes one of several). With a `tracer` (tracing
    on: `observability.tracing.tracing_setup`) it is a `TracedProxy`, which spans each step;
    without, the plain `Proxy`, which has no span code on its path.
    """
    conf = sentinel_settings.gateway
    breaker_config = breaker_config_from(conf)
    if settings.REDIS_URL:
        redis = gateway_redis_client(settings.REDIS_URL)
        prefix = f"{settings.CACHE_KEY_PREFIX}:gw:"
        shared_window = RedisWindowLimiter(redis, prefix)
        shared_breaker = RedisBreaker(redis, prefix, breaker_config, probe_ttl_ms=conf.REQUEST_TIMEOUT_MS)
        window_limiter: RedisWindowLimiter | MemoryWindowLimiter = shared_window
        breaker: RedisBreaker | MemoryBreaker = shared_breaker
        gate: RedisGate | None = RedisGate(redis, shared_window, shared_breaker)
    else:
        window_limiter = MemoryWindowLimiter()
        breaker = process_breaker()
        gate = None
    parts: dict[str, Any] = {
        "config": gateway_config(),
        "fallback": fallback,
        "authenticator": Authenticator(
            jwt_verifier=JwtVerifier(settings.SIMPLE_JWT["SIGNING_KEY"]),
            keys=ApiKeyResolver(lookup_key),
            tenant_header=conf.TENANT_HEADER,
        ),
        "window_limiter": window_limiter,
        "breaker": breaker,
        "forwarder": Forwarder(egress=egress_policy(), on_egress_refusal=_egress_refused),
        "gauge": pressure_gauge(conf),
        "admission": TierAdmission(
            standard_at=conf.SHED_STANDARD_AT, economy_at=conf.SHED_ECONOMY_AT, hysteresis=conf.SHED_HYSTERESIS
        ),
        "on_complete": on_complete,
        "gate": gate,
    }
    return Proxy(**parts) if tracer is None else TracedProxy(tracer=tracer, **parts)


class GatewayRuntime:
    """Starts with the server (ASGI lifespan), reloads configuration on change, stops cleanly.

    Every refresh tick it hands the proxy's gauges (in flight, pressure) to `gauges`. With
    `metrics_flush`, it calls it every `metrics_flush_seconds` and once more at shutdown (the
    request metrics counted in memory: `gateway.metrics.RequestCounts`).
    """

    def __init__(
        self,
        proxy: Proxy,
        *,
        gauges: GaugeSink,
        metrics_flush: Callable[[], None] | None = None,
        metrics_flush_seconds: float = 0.25,
    ) -> None:
        self.proxy = proxy
        self.gauges = gauges
        self.metrics_flush = metrics_flush
        self.metrics_flush_seconds = metrics_flush_seconds
        self.version: object = _NEVER_LOADED
        self._task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self.fleet: FleetPressure | None = None

    async def start(self) -> None:
        forget_dead_processes(settings.PROMETHEUS_MULTIPROC_DIR)
        if settings.REDIS_URL:
            # A client of the server's loop, created here (lifespan runs in it).
            redis = gateway_redis_client(settings.REDIS_URL)
            self.fleet = FleetPressure(redis, f"{settings.CACHE_KEY_PREFIX}:gw:")
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="gateway-config-refresh")
        if self.metrics_flush is not None:
            self._flush_task = asyncio.create_task(self._flush_forever(), name="gateway-metrics-flush")

    async def stop(self) -> None:
        for task in (self._task, self._flush_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flush_metrics()
        if self.fleet is not None:
            await self.fleet.redis.aclose()
        await self.proxy.forwarder.close()
        # This process's "live" gauges leave the sums (active requests, pressure).
        multiprocess.mark_process_dead(process_identifier(), str(settings.PROMETHEUS_MULTIPROC_DIR))

    async def refresh(self) -> bool:
        """Reloads routes and tenants when the version moved; True when it did."""
        try:
            version = await _load_version()
        except Exception:  # a dead cache must not stop the proxy serving its last known table
            logger.warning("gateway config version unavailable", exc_info=True)
            if self.version is not _NEVER_LOADED:
                return False
            version = None  # no table yet: load one anyway, and reload once the version is readable
        if version == self.version:
            return False
        try:
            routes, tenants, inactive = await _load_routes(), await _load_tenants(), await _load_inactive_users()
        except Exception:  # the database is down or not migrated yet: try again next tick
            logger.warning("gateway config could not be loaded; retrying", exc_info=True)
            return False
        self.proxy.state.routes = RouteTable(routes, version=int(version or 0))
        self.proxy.state.tenants = TenantDirectory(tenants, version=int(version or 0), inactive_users=inactive)
        self.proxy.authenticator.keys.forget()
        self.version = version
        logger.info("gateway config loaded", extra={"routes": len(routes), "tenants": len(tenants), "version": version})
        return True

    async def share_pressure(self) -> None:
        """Publishes this process's pressure and takes in the fleet's (Redis mode only)."""
        if self.fleet is None:
            return
        reports = await self.fleet.exchange(self.proxy.gauge.score())
        self.proxy.state.fleet_pressure = reports or []

    def publish_gauges(self) -> None:
        self.gauges(in_flight=self.proxy.gauge.in_flight, pressure=self.proxy.pressure())

    def _flush_metrics(self) -> None:
        if self.metrics_flush is None:
            return
        try:
            self.metrics_flush()
        except Exception:  # a full disk must not stop the proxy; the counts of this tick are lost
            logger.exception("request metrics could not be written")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_flush_seconds)
            self._flush_metrics()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self.refresh()
            await self.share_pressure()
            self.publish_gauges()

"""Sentinel's own tunables as one typed object: ``sentinel_settings.gateway.BURST_CAPACITY``.

The settings module keeps one namespaced dict per app (``SENTINEL_ACCOUNTS``, ``SENTINEL_GATEWAY``,
``SENTINEL_RULES``, ``SENTINEL_OBSERVABILITY``, ``SENTINEL_MONITORS``, ``SENTINEL_FRAUD``), each value read from its
environment variable with its default and its bounds there, in one place. This object is how code
reads them, after DRF's ``api_settings``: attributes with types (mypy checks every name and use),
the dict's shape checked on first use (a missing or unknown key raises ``ImproperlyConfigured``
naming the dict), and each section built again when the dict is replaced (``override_settings`` and pytest-django's
``settings`` fixture replace it), so tests that override a dict are honoured without a signal. A
dict changed in place is not noticed: replace it (``{**settings.SENTINEL_RULES, "X": 1}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "AccountsSettings",
    "GatewaySettings",
    "MonitorsSettings",
    "ObservabilitySettings",
    "RulesSettings",
    "SentinelSettings",
    "sentinel_settings",
]


@dataclass(frozen=True)
class AccountsSettings:
    """``SENTINEL_ACCOUNTS``: the failed-login limiter and API-key bookkeeping."""

    LOGIN_FAILURES_PER_USERNAME: int
    LOGIN_FAILURES_PER_IP: int
    LOGIN_FAILURE_WINDOW_SECONDS: int
    API_KEY_TOUCH_SECONDS: int  # an API key's last_used_at is written at most this often


@dataclass(frozen=True)
class GatewaySettings:
    """``SENTINEL_GATEWAY``: the proxy's limits, breaker and load shedding (units in the names:
    ``_MS`` milliseconds, ``_S`` seconds; ``*_AT`` and ``FORCED_PRESSURE`` are pressures, 0-100)."""

    DOWNSTREAM_URL: str
    TENANT_HEADER: str  # lower-case
    BURST_CAPACITY: int
    REFILL_RATE: float  # tokens per second
    WINDOW_MS: int
    BASE_RATE_LIMIT: int
    SLO_LATENCY_THRESHOLD: int  # milliseconds
    REQUEST_TIMEOUT_MS: int
    BREAKER_FAILURE_THRESHOLD: float  # a share, 0-1
    BREAKER_CONSECUTIVE_FAILURES: int
    BREAKER_COOLDOWN_MS: int
    BREAKER_HALF_OPEN_MAX_REQUESTS: int
    RATE_LIMIT_FAIL_MODE: str  # "open" | "closed"
    CAPACITY: int  # in-flight requests of one web process at which its pressure reads 100
    SHED_STANDARD_AT: float
    SHED_ECONOMY_AT: float
    SHED_HYSTERESIS: float
    PRESSURE_SMOOTHING_MS: int
    PRESSURE_WINDOW_S: float
    PRESSURE_MIN_SAMPLES: int
    PRESSURE_MIN_RATE: float  # requests per second
    PRESSURE_STRAIN_WEIGHT: float
    FORCED_PRESSURE: float | None  # drills and tests: act as if pressure were this


@dataclass(frozen=True)
class RulesSettings:
    """``SENTINEL_RULES``: event limits and notification delivery."""

    DELIVERY_MAX_ATTEMPTS: int
    DELIVERY_BACKOFF_SECONDS: float
    DELIVERY_BACKOFF_MAX_SECONDS: float
    DELIVERY_TIMEOUT_SECONDS: float
    DELIVERY_MAX_RETRY_AFTER_SECONDS: float
    DELIVERY_LEASE_SECONDS: float
    EVENTS_STREAM: str  # the Redis stream's key
    EVENT_MAX_BYTES: int
    EVENT_MAX_DEPTH: int


@dataclass(frozen=True)
class ObservabilitySettings:
    """``SENTINEL_OBSERVABILITY``: the request log's pipeline and retention (docs/request-log.md)."""

    REQUEST_LOG_ENABLED: bool
    REQUEST_LOG_RETENTION_DAYS: int
    REQUEST_LOG_PARTITIONS_AHEAD: int  # days of partitions created ahead of today (PostgreSQL)
    REQUEST_LOG_BATCH_ROWS: int  # a batch is written when it holds this many rows...
    REQUEST_LOG_FLUSH_SECONDS: float  # ...or when its oldest row has waited this long
    REQUEST_LOG_MAX_ROWS: int  # rows held in memory (queued or being retried) before new ones are dropped
    REQUEST_LOG_MAX_BYTES: int  # the same bound in (estimated) bytes
    REQUEST_LOG_RETRY_SECONDS: float  # first wait after a failed write; doubles each time, with jitter
    REQUEST_LOG_RETRY_MAX_SECONDS: float  # the longest wait between two attempts
    REQUEST_LOG_WRITE_TIMEOUT_SECONDS: float  # one batch's write (connect + COPY + commit) at most
    REQUEST_LOG_SHUTDOWN_SECONDS: float  # how long a stopping process keeps trying to flush


@dataclass(frozen=True)
class MonitorsSettings:
    """``SENTINEL_MONITORS``: check scheduling, the worker's check pipeline, retention and the
    status pages' cache (seconds
    in ``_SECONDS``, days in ``_DAYS``)."""

    DISPATCH_SECONDS: float
    DISPATCH_LOOKAHEAD_SECONDS: float
    DISPATCH_MAX_CLAIMS: int
    BATCH_SIZE: int
    CLAIM_MARGIN_SECONDS: float
    CHECK_CONCURRENCY: int
    WRITE_BATCH_ROWS: int
    WRITE_FLUSH_SECONDS: float
    CHECK_RESULT_RETENTION_DAYS: int
    ROLLUP_HOURLY_RETENTION_DAYS: int
    ROLLUP_DAILY_RETENTION_DAYS: int
    RETENTION_BATCH_ROWS: int
    STATUS_CACHE_SECONDS: int


@dataclass(frozen=True)
class FraudSettings:
    """``SENTINEL_FRAUD``: the brain's address and deadline, its breaker, the default thresholds,
    the re-score and events tasks, the model's folder, the brain's fault injection (ms in
    ``_MS``, seconds in ``_SECONDS``, shares 0..1 in ``_RATE``) and the per-tenant admission of
    ``POST /transaction``."""

    BRAIN_ADDRESS: str
    BRAIN_TIMEOUT_MS: int
    BREAKER_FAILURES: int
    BREAKER_RESET_SECONDS: float
    REVIEW_THRESHOLD: float
    DECLINE_THRESHOLD: float
    RESCORE_SECONDS: float
    RESCORE_BATCH: int
    EMIT_SECONDS: float
    MODEL_DIR: str
    BRAIN_SLOW_RATE: float
    BRAIN_SLOW_MS: int
    BRAIN_FAILURE_RATE: float
    BURST_CAPACITY: int  # a standard tenant's burst bucket per web process, scaled by tier
    REFILL_RATE: float  # its refill, transactions per second


_Section = TypeVar("_Section")


class SentinelSettings:
    """One section per namespaced dict, read lazily from ``django.conf.settings``."""

    def __init__(self) -> None:
        # dict name -> (the dict the section was built from, the section)
        self._built: dict[str, tuple[object, Any]] = {}

    @property
    def accounts(self) -> AccountsSettings:
        return self._section("SENTINEL_ACCOUNTS", AccountsSettings)

    @property
    def fraud(self) -> FraudSettings:
        return self._section("SENTINEL_FRAUD", FraudSettings)

    @property
    def gateway(self) -> GatewaySettings:
        return self._section("SENTINEL_GATEWAY", GatewaySettings)

    @property
    def monitors(self) -> MonitorsSettings:
        return self._section("SENTINEL_MONITORS", MonitorsSettings)

    @property
    def observability(self) -> ObservabilitySettings:
        return self._section("SENTINEL_OBSERVABILITY", ObservabilitySettings)

    @property
    def rules(self) -> RulesSettings:
        return self._section("SENTINEL_RULES", RulesSettings)

    def _section(self, name: str, kind: type[_Section]) -> _Section:
        raw = getattr(settings, name)
        built = self._built.get(name)
        if built is not None and built[0] is raw:
            section: _Section = built[1]
            return section
        try:
            section = kind(**raw)
        except TypeError as exc:  # a key missing or unknown
            raise ImproperlyConfigured(f"{name}: {exc}") from None
        self._built[name] = (raw, section)
        return section


sentinel_settings = SentinelSettings()

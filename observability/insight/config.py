"""The insight engine's tunables (``settings.SENTINEL_INSIGHT``) as one typed, frozen object.

The detectors take it as an argument, so they run without Django; ``insight_config()`` builds it
from the settings (rebuilt when the dict is replaced, as tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class InsightConfig:
    """Units are in the names: ``_SECONDS``, ``_PER_MIN`` (requests per minute), ``_MS``;
    ``_SHARE`` is 0-1; ``_FACTOR`` multiplies a baseline. Defaults and sources: docs/insight.md."""

    PERIOD_SECONDS: float = 60.0
    WINDOW_SECONDS: float = 60.0
    BASELINE_SECONDS: float = 3600.0
    BASELINE_MAX_SUBJECTS: int = 5000
    RESOLVE_AFTER_PERIODS: int = 5
    FLOOD_IP_FLOOR_PER_MIN: float = 300.0
    FLOOD_TENANT_FLOOR_PER_MIN: float = 3000.0
    FLOOD_FACTOR: float = 5.0
    FLOOD_CRITICAL_FACTOR: float = 20.0
    BRUTE_FORCE_WINDOW_SECONDS: float = 300.0
    BRUTE_FORCE_IP_FAILURES: int = 10
    BRUTE_FORCE_USER_FAILURES: int = 10
    BRUTE_FORCE_CRITICAL_FACTOR: float = 5.0
    ERROR_MIN_REQUESTS: int = 50
    ERROR_FLOOR_SHARE: float = 0.05
    ERROR_FACTOR: float = 3.0
    ERROR_CRITICAL_FACTOR: float = 10.0
    LATENCY_MIN_REQUESTS: int = 50
    LATENCY_FLOOR_MS: float = 100.0
    LATENCY_FACTOR: float = 2.0
    LATENCY_CRITICAL_FACTOR: float = 4.0
    FLAP_WINDOW_SECONDS: float = 600.0
    FLAP_OPENS: int = 3
    FLAP_CRITICAL_OPENS: int = 6
    LOGIN_FAILURE_RETENTION_SECONDS: float = 86400.0
    EVENTS_TENANT: str = ""
    LLM_URL: str = ""
    LLM_MODEL: str = "gpt-4o-mini"
    LLM_API_KEY: str = ""
    LLM_TIMEOUT_SECONDS: float = 3.0
    LLM_CACHE_SECONDS: int = 600

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> InsightConfig:
        """Raises ValueError naming an unknown key (a typo in settings must not pass silently)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"SENTINEL_INSIGHT: unknown keys {unknown}")
        return cls(**raw)


_built: tuple[object, InsightConfig] | None = None


def insight_config() -> InsightConfig:
    """The configuration from ``settings.SENTINEL_INSIGHT``, built once per dict object."""
    global _built
    from django.conf import settings

    raw = settings.SENTINEL_INSIGHT
    if _built is None or _built[0] is not raw:
        _built = (raw, InsightConfig.from_mapping(dict(raw)))
    return _built[1]

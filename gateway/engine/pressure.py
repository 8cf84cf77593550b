"""Pressure 0-100 and admission by tier (SPEC 2 steps 6 and 7).

Like Envoy's overload manager, pressure is the worst of several resource ratios, each 0..1:
in-flight requests against capacity, p95 latency against the SLO, and the upstream error rate.
Each process measures its own; the fleet's figure is the mean of every process's recent report
(published in Redis by the gateway), and a process sheds on the higher of its own and the fleet's,
so one overloaded process protects itself even when the fleet is calm.

Admission follows Stripe's load shedders: `vital` is never shed; `economy` is shed first, at a
lower pressure than `standard`. Each tier stops being shed only once pressure has fallen
`hysteresis` points below its threshold, so a score hovering at the line does not flap.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class PressureReading:
    score: float  # 0..100
    concurrency: float  # each component 0..1
    latency: float
    errors: float
    in_flight: int
    p95_ms: float
    error_rate: float


class PressureGauge:
    """One process's pressure, over a sliding window of recent requests."""

    def __init__(
        self, *, capacity: int, slo_ms: float, window_s: float = 10.0, max_samples: int = 4096, min_samples: int = 20
    ) -> None:
        self.capacity = max(1, capacity)
        # Below this many recent requests, latency and errors say too little to shed anyone on:
        # two failures of two is noise, not an overload.
        self.min_samples = min_samples
        # The window's p95 and error rate are recomputed at most this often, not per request: a
        # sort of thousands of samples on every request cost 1.4 ms of CPU (bench/gateway.py's
        # profile) and capped a process at ~400 req/s.
        self.recompute_s = 0.25
        self._window_reading = PressureReading(0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)
        self._window_read_at = float("-inf")
        self.slo_ms = slo_ms
        self.window_s = window_s
        self.in_flight = 0
        # (finished_at, latency_ms, failed) of the latest requests; bounded so memory is flat.
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=max_samples)

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, latency_ms: float, *, failed: bool, now: float | None = None) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._samples.append((time.monotonic() if now is None else now, latency_ms, failed))

    def score(self, now: float | None = None) -> float:
        """The current score, cheap enough for every request: live concurrency, and the
        latency and error components as of the last recompute (at most `recompute_s` old)."""
        now = time.monotonic() if now is None else now
        if now - self._window_read_at >= self.recompute_s:
            self._window_reading = self.reading(now)
            self._window_read_at = now
        concurrency = min(1.0, self.in_flight / self.capacity)
        cached = self._window_reading
        return round(100 * max(concurrency, cached.latency, cached.errors), 1)

    def reading(self, now: float | None = None) -> PressureReading:
        now = time.monotonic() if now is None else now
        recent = [(latency, failed) for at, latency, failed in self._samples if now - at <= self.window_s]
        if len(recent) < self.min_samples:
            recent = []
        p95 = _percentile(sorted(latency for latency, _ in recent), 0.95)
        error_rate = sum(failed for _, failed in recent) / len(recent) if recent else 0.0
        concurrency = min(1.0, self.in_flight / self.capacity)
        # At the SLO latency counts half; at twice the SLO, full.
        latency = min(1.0, p95 / (2 * self.slo_ms)) if self.slo_ms > 0 else 0.0
        # Half the requests failing is as bad as it gets.
        errors = min(1.0, error_rate / 0.5)
        score = round(100 * max(concurrency, latency, errors), 1)
        return PressureReading(score, concurrency, latency, errors, self.in_flight, p95, error_rate)


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


def combine(local: float, fleet_reports: list[float]) -> float:
    """The pressure a process acts on: its own, or the fleet's mean when that is higher."""
    fleet = sum(fleet_reports) / len(fleet_reports) if fleet_reports else 0.0
    return max(local, fleet)


class TierAdmission:
    """Decides, per tier, whether to admit at the current pressure, with hysteresis."""

    def __init__(self, *, standard_at: float, economy_at: float, hysteresis: float = 10.0) -> None:
        self.thresholds = {"standard": standard_at, "economy": economy_at}
        self.hysteresis = hysteresis
        self.shedding = {"standard": False, "economy": False}

    def admit(self, tier: str, pressure: float) -> bool:
        threshold = self.thresholds.get(tier)
        if threshold is None:  # vital, or anything unknown to the shedder, always passes
            return True
        if self.shedding[tier]:
            self.shedding[tier] = pressure >= threshold - self.hysteresis
        else:
            self.shedding[tier] = pressure >= threshold
        return not self.shedding[tier]

    def retry_after_s(self) -> int:
        """What a shed client is told: long enough for pressure to move, short enough to return."""
        return 5

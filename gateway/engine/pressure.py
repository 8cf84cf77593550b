"""Pressure 0-100 and admission by tier (SPEC 2 steps 6 and 7).

Pressure follows sustained saturation of the process, not the health of one upstream. The primary
signal is what hurts every tenant at once: requests in flight against the process's capacity.
Latency and upstream errors only add to it, weighed with that concurrency, and only over a
meaningful sample; a slow or failing upstream with little in flight is the breaker's and the
timeout's business, never a reason to shed other tenants (issue 8 item 8)::

    U  = min(2, in_flight / CAPACITY)                  live utilisation of this process
    Ū  ← Ū + (1 - e^(-Δt/τ)) · (U - Ū)                 smoothed: exact EWMA of the step function
                                                       U(t), τ = PRESSURE_SMOOTHING_MS
    n, s, f = requests finished, slower than SLO_LATENCY_THRESHOLD, failed upstream,
              over the last PRESSURE_WINDOW_S seconds
    meaningful = n ≥ PRESSURE_MIN_SAMPLES  and  n / PRESSURE_WINDOW_S ≥ PRESSURE_MIN_RATE
    L  = clamp01((s/n - 0.05) / 0.45)   if meaningful else 0
    E  = clamp01((f/n - 0.05) / 0.45)   if meaningful else 0
    S  = max(L, E)                                     strain, 0..1
    pressure = 100 · min(1, Ū · (1 + PRESSURE_STRAIN_WEIGHT · S))

- `CAPACITY` (`GATEWAY_CAPACITY`, default 512): chosen when one process served at most ~2,900
  req/s on the 2-core reference box, where 512 in flight means each request is held ~176 ms on
  average (Little's law), just under the 200 ms SLO: past it, requests queue. At a process's
  current rate (README, "Performance") 512 / rate is the time held; it stays under 200 ms from
  2,560 req/s up.
- `U` is capped at 2 before smoothing, so a flood of twice the capacity or more reads 100 after
  ~0.7 τ and falls back under 60 within ~1.2 τ once it is gone: no long tail after a blip.
- `τ` (default 1 s) lets a burst of a few hundred milliseconds pass (a 200 ms spike to full
  capacity reads 18) while a sustained overload crosses the economy line (70) in ~1.2 s and the
  standard line (90) in ~2.3 s — the "shed and restore slowly" advice of Stripe's load shedders,
  at the 250 ms-to-seconds scale of Envoy's overload manager.
- `n, s, f` are kept in 10 buckets of PRESSURE_WINDOW_S/10 (default 10 s: 1 s each), O(1) per
  request; the oldest bucket leaves whole, so the window spans the last 9 to 10 s.
- The floors (`PRESSURE_MIN_SAMPLES` 50, as the request count of Envoy's adaptive concurrency
  minRTT window; `PRESSURE_MIN_RATE` 10 req/s, under 0.4 % of what one process serves at most)
  keep a handful of requests from judging anything: 2 slow calls of 22 are noise, not a trend.
- `L` and `E` are zero inside a 5 % budget (the SLO read as a p95: 5 % of requests may be slow)
  and saturate at 50 % (the breaker's default failure ratio, `BREAKER_FAILURE_THRESHOLD`: past
  it the upstream's breaker opens and the strain is the breaker's to handle).
- Strain multiplies concurrency instead of standing beside it: with nothing in flight, any number
  of slow or failed responses reads 0. With the default weight 1, full strain makes each request
  in flight count double, so economy is shed at 35 % of capacity and standard at 45 % (halving,
  the most Envoy's adaptive concurrency lets latency take off its limit in one step: its gradient
  is clamped to 0.5-2).
- Requests counted in `n` are all that finished, the gateway's own fast rejections included.

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
from collections.abc import Callable
from dataclasses import dataclass

# The share of slow (or failed) requests that costs nothing: the SLO read as a p95.
STRAIN_BUDGET = 0.05
# The share at which latency or errors count in full: BREAKER_FAILURE_THRESHOLD's default.
STRAIN_SATURATION = 0.5
# Utilisation above this is not averaged in: it bounds how long a flood is remembered.
UTILISATION_CAP = 2.0
# The window is kept as this many buckets of counters (O(1) per request, no sorting).
WINDOW_BUCKETS = 10


@dataclass(frozen=True)
class PressureReading:
    """One process's pressure and what it is made of."""

    score: float  # 0..100, what admission acts on
    concurrency: float  # Ū, the smoothed in-flight/capacity ratio, 0..2
    latency: float  # L, 0..1 (0 below the sample floors)
    errors: float  # E, 0..1 (0 below the sample floors)
    in_flight: int
    samples: int  # n: requests finished in the window
    rate: float  # n / window, requests per second
    slow_share: float  # s / n, 0..1 (0 with no samples)
    error_rate: float  # f / n, 0..1 (0 with no samples)

    @property
    def strain(self) -> float:
        """S = max(L, E), 0..1."""
        return max(self.latency, self.errors)


class PressureGauge:
    """One process's pressure: smoothed concurrency, weighed by latency and errors over a window.

    `capacity` in requests, `slo_ms` in milliseconds, `smoothing_s`, `window_s` in seconds,
    `min_rate` in requests per second; `clock` returns seconds (monotonic; tests inject a fake).
    The formula and the source of each default are in the module's docstring.
    """

    def __init__(
        self,
        *,
        capacity: int,
        slo_ms: float,
        smoothing_s: float = 1.0,
        window_s: float = 10.0,
        min_samples: int = 50,
        min_rate: float = 10.0,
        strain_weight: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(1, capacity)
        self.slo_ms = slo_ms
        self.smoothing_s = max(0.0, smoothing_s)
        self.window_s = max(0.001, window_s)
        self.min_samples = max(1, min_samples)
        self.min_rate = max(0.0, min_rate)
        self.strain_weight = max(0.0, strain_weight)
        self.clock = clock
        self.in_flight = 0
        self._smoothed = 0.0
        self._smoothed_at = clock()
        self._bucket_s = self.window_s / WINDOW_BUCKETS
        # Ring of counters: which bucket (absolute index) each slot holds, and its counts; and the
        # totals of the buckets inside the window as of bucket `_epoch`, kept up to date so that
        # the per-request score is O(1) (they are re-summed once per bucket, when time moves on).
        self._epoch = int(self._smoothed_at // self._bucket_s)
        self._epochs = [self._epoch - WINDOW_BUCKETS] * WINDOW_BUCKETS  # all outside the window
        self._counts = [0] * WINDOW_BUCKETS
        self._slow = [0] * WINDOW_BUCKETS
        self._failed = [0] * WINDOW_BUCKETS
        self._total = self._total_slow = self._total_failed = 0
        self._strain_now = 0.0  # S for the current totals
        # Below this many samples in the window, latency and errors count for nothing.
        self._floor = max(self.min_samples, self.min_rate * self.window_s)

    def started(self) -> None:
        """A request entered the proxy (before admission: it counts itself)."""
        self._advance(self.clock())
        self.in_flight += 1

    def finished(self, latency_ms: float, *, failed: bool) -> None:
        """A request left the proxy after `latency_ms`; `failed` when the upstream failed it."""
        now = self.clock()
        self._advance(now)
        self.in_flight = max(0, self.in_flight - 1)
        epoch = int(now // self._bucket_s)
        if epoch != self._epoch:
            self._roll(epoch)
        slot = epoch % WINDOW_BUCKETS
        if self._epochs[slot] != epoch:  # a bucket that left the window: already out of the totals
            self._epochs[slot] = epoch
            self._counts[slot] = self._slow[slot] = self._failed[slot] = 0
        slow = latency_ms > self.slo_ms
        self._counts[slot] += 1
        self._slow[slot] += slow
        self._failed[slot] += failed
        self._total += 1
        self._total_slow += slow
        self._total_failed += failed
        if self._total >= self._floor:  # below it S stays 0: totals only grow between rolls
            self._strain_now = _strain(max(self._total_slow, self._total_failed) / self._total)

    def score(self) -> float:
        """The current pressure, 0..100 rounded to 0.1; O(1), cheap enough for every request."""
        now = self.clock()
        self._advance(now)
        epoch = int(now // self._bucket_s)
        if epoch != self._epoch:
            self._roll(epoch)
        # round(x * 10) / 10, not round(x, 1): the same tenths at a tenth of the cost.
        return round(1000 * min(1.0, self._smoothed * (1 + self.strain_weight * self._strain_now))) / 10

    def reading(self) -> PressureReading:
        """The score with its terms, as of the clock's now."""
        score = self.score()
        samples = self._total
        meaningful = samples >= self._floor
        slow_share = self._total_slow / samples if samples else 0.0
        error_rate = self._total_failed / samples if samples else 0.0
        return PressureReading(
            score=score,
            concurrency=self._smoothed,
            latency=_strain(slow_share) if meaningful else 0.0,
            errors=_strain(error_rate) if meaningful else 0.0,
            in_flight=self.in_flight,
            samples=samples,
            rate=samples / self.window_s,
            slow_share=slow_share,
            error_rate=error_rate,
        )

    def _roll(self, epoch: int) -> None:
        """Moves the window to bucket `epoch`: re-sums the totals of the buckets still inside it,
        and S with them (max(L, E) is the strain of the larger share: `_strain` is monotonic)."""
        self._epoch = epoch
        self._total = self._total_slow = self._total_failed = 0
        for slot in range(WINDOW_BUCKETS):
            if 0 <= epoch - self._epochs[slot] < WINDOW_BUCKETS:
                self._total += self._counts[slot]
                self._total_slow += self._slow[slot]
                self._total_failed += self._failed[slot]
        meaningful = self._total >= self._floor
        self._strain_now = _strain(max(self._total_slow, self._total_failed) / self._total) if meaningful else 0.0

    def _advance(self, now: float) -> None:
        """Brings Ū to `now`: in_flight has been constant since the last event, so the EWMA of
        that step is exact whatever the spacing of events."""
        elapsed = now - self._smoothed_at
        if elapsed <= 0:
            return
        utilisation = min(UTILISATION_CAP, self.in_flight / self.capacity)
        if self.smoothing_s <= 0:
            self._smoothed = utilisation
        elif utilisation != self._smoothed:
            self._smoothed += (1 - math.exp(-elapsed / self.smoothing_s)) * (utilisation - self._smoothed)
        self._smoothed_at = now


def _strain(share: float) -> float:
    """0 within the budget, 1 at saturation, linear between."""
    return min(1.0, max(0.0, (share - STRAIN_BUDGET) / (STRAIN_SATURATION - STRAIN_BUDGET)))


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

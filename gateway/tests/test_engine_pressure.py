"""Pressure follows sustained saturation (issue 8 item 8), measured on a fake clock; shedding by
tier with hysteresis."""

from __future__ import annotations

import pytest

from gateway.engine.pressure import PressureGauge, TierAdmission, combine


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gauge_on(
    clock: FakeClock,
    *,
    capacity: int = 512,
    smoothing_s: float = 1.0,
    window_s: float = 10.0,
    min_samples: int = 50,
    min_rate: float = 10.0,
    strain_weight: float = 1.0,
) -> PressureGauge:
    """A gauge with the settings' defaults (SLO 200 ms) unless told otherwise, on `clock`."""
    return PressureGauge(
        capacity=capacity,
        slo_ms=200,
        smoothing_s=smoothing_s,
        window_s=window_s,
        min_samples=min_samples,
        min_rate=min_rate,
        strain_weight=strain_weight,
        clock=clock,
    )


def serve(
    gauge: PressureGauge, clock: FakeClock, latencies_ms: list[float], *, spacing_s: float, failed: bool = False
) -> None:
    """One request after another, each `spacing_s` after the previous: at most one in flight."""
    for latency in latencies_ms:
        gauge.started()
        clock.advance(spacing_s)
        gauge.finished(latency, failed=failed)


def hold(gauge: PressureGauge, count: int) -> None:
    for _ in range(count):
        gauge.started()


def release(gauge: PressureGauge, count: int, latency_ms: float = 5.0) -> None:
    for _ in range(count):
        gauge.finished(latency_ms, failed=False)


def test_an_idle_process_has_no_pressure() -> None:
    assert gauge_on(FakeClock()).score() == 0


def test_the_issues_twenty_fast_and_two_slow_requests_are_no_pressure() -> None:
    # Given nothing in flight, 20 fast requests and 2 of 0.5 s at an SLO of 200 ms
    clock = FakeClock()
    gauge = gauge_on(clock)
    serve(gauge, clock, [20.0] * 20 + [500.0] * 2, spacing_s=0.02)

    # Then pressure is nothing, then and for the rest of the window
    readings = []
    for _ in range(12):
        readings.append(gauge.score())
        clock.advance(1.0)
    assert max(readings) < 1, readings


@pytest.mark.parametrize(
    ("latency_ms", "failed"),
    [(500.0, False), (30_000.0, True), (3.0, True)],
    ids=["slow", "timeouts", "fast-5xx"],
)
def test_a_failing_upstream_at_a_meaningful_rate_with_little_in_flight_sheds_nobody(
    latency_ms: float, failed: bool
) -> None:
    # Given 60 requests/s for 5 s, half of them slow or failed, one in flight at a time
    clock = FakeClock()
    gauge = gauge_on(clock)
    for _ in range(150):
        serve(gauge, clock, [5.0], spacing_s=1 / 60)
        serve(gauge, clock, [latency_ms], spacing_s=1 / 60, failed=failed)
    reading = gauge.reading()

    # Then the sample is meaningful and the strain full, but nothing piles up: no pressure
    assert reading.samples == 300
    assert reading.strain == 1.0
    assert reading.score < 1, reading


@pytest.mark.parametrize(
    ("requests", "spacing_s", "window_s"),
    [(49, 0.01, 2.0), (90, 0.11, 10.0)],
    ids=["49-in-2s-below-the-sample-floor", "9-per-s-below-the-rate-floor"],
)
def test_latency_and_errors_below_the_floors_count_for_nothing(
    requests: int, spacing_s: float, window_s: float
) -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, window_s=window_s)
    hold(gauge, 5)  # half the capacity in flight: strain, if it counted, would double it
    clock.advance(10.0)
    serve(gauge, clock, [5000.0] * requests, spacing_s=spacing_s, failed=True)

    reading = gauge.reading()

    assert reading.samples >= 49
    assert (reading.latency, reading.errors) == (0.0, 0.0), reading
    assert reading.score == pytest.approx(100 * reading.concurrency, abs=0.1)


def test_sustained_concurrency_reads_as_the_share_of_capacity() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10)
    hold(gauge, 8)
    clock.advance(10.0)

    assert gauge.score() == pytest.approx(80, abs=0.5)


def test_concurrency_is_smoothed_so_a_blip_does_not_shed() -> None:
    # Given the whole capacity in flight for 200 ms, then gone
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, smoothing_s=1.0)
    hold(gauge, 10)
    scores = []
    for _ in range(4):
        clock.advance(0.05)
        scores.append(gauge.score())
    release(gauge, 10)
    clock.advance(0.5)
    scores.append(gauge.score())

    assert max(scores) == pytest.approx(18.1, abs=0.2)  # 1 - e^(-0.2)
    assert scores[-1] < max(scores)


def test_a_sustained_overload_crosses_economy_then_standard_and_is_forgotten_once_over() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, smoothing_s=1.0)
    hold(gauge, 10)
    clock.advance(1.25)
    at_economy = gauge.score()
    clock.advance(1.1)
    at_standard = gauge.score()
    clock.advance(10.0)
    saturated = gauge.score()
    release(gauge, 10)
    clock.advance(0.6)
    after = gauge.score()

    assert 70 <= at_economy < 90 <= at_standard
    assert saturated == 100
    assert after < 60  # under the economy line's hysteresis in 0.6 s, not 10 s


def test_a_flood_reads_100_quickly_and_does_not_linger() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, smoothing_s=1.0)
    hold(gauge, 1000)  # 100 times the capacity: averaged in as twice
    clock.advance(0.75)
    during = gauge.score()
    clock.advance(60.0)
    release(gauge, 1000)
    clock.advance(1.25)

    assert during == 100
    assert gauge.score() < 60


def test_without_smoothing_concurrency_is_live() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, smoothing_s=0)
    hold(gauge, 7)
    clock.advance(0.001)

    assert gauge.score() == 70


@pytest.mark.parametrize("failed", [False, True], ids=["slow", "failed"])
def test_strain_weighs_on_concurrency(failed: bool) -> None:
    # Given 40 % of the capacity in flight, held
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=100, strain_weight=1.0)
    hold(gauge, 40)
    clock.advance(10.0)
    calm = gauge.score()
    # When, over the next 10 s, 60 % of 200 other requests are slow (or failed)
    for n in range(200):
        bad = n % 5 < 3
        serve(gauge, clock, [900.0 if bad and not failed else 5.0], spacing_s=0.05, failed=bad and failed)

    # Then each request in flight counts double
    reading = gauge.reading()
    assert calm == pytest.approx(40, abs=0.5)
    assert reading.strain == 1.0
    assert reading.concurrency == pytest.approx(0.41, abs=0.005)  # 40 held, 1 being served
    assert reading.score == pytest.approx(200 * reading.concurrency, abs=0.1)


def test_strain_is_linear_from_the_budget_to_saturation() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=100)
    hold(gauge, 50)
    clock.advance(10.0)
    for n in range(200):  # 27.5 % slow: halfway between the 5 % budget and 50 %
        serve(gauge, clock, [900.0 if n % 40 < 11 else 5.0], spacing_s=0.04)

    reading = gauge.reading()

    assert reading.slow_share == pytest.approx(0.275)
    assert reading.latency == pytest.approx(0.5)
    assert reading.score == pytest.approx(150 * reading.concurrency, abs=0.1)


def test_a_share_within_the_budget_is_no_strain() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock)
    serve(gauge, clock, [900.0 if n % 20 == 0 else 5.0 for n in range(200)], spacing_s=0.04)

    assert gauge.reading().latency == 0.0


def test_old_samples_leave_the_window() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=10, window_s=10, min_samples=1, min_rate=0)
    hold(gauge, 5)
    serve(gauge, clock, [5000.0] * 10, spacing_s=0.01, failed=True)
    clock.advance(5.0)
    inside = gauge.reading()
    clock.advance(6.0)
    outside = gauge.reading()

    assert (inside.samples, inside.errors) == (10, 1.0)
    assert (outside.samples, outside.errors) == (0, 0.0)
    assert outside.score == pytest.approx(50, abs=1)


def test_the_fleet_mean_applies_when_higher() -> None:
    assert combine(10, [80, 60]) == 70
    assert combine(90, [10, 20]) == 90
    assert combine(5, []) == 5


def test_economy_is_shed_first_and_vital_never() -> None:
    admission = TierAdmission(standard_at=90, economy_at=70)

    assert [admission.admit(tier, 75) for tier in ("vital", "standard", "economy")] == [True, True, False]
    assert [admission.admit(tier, 100) for tier in ("vital", "standard", "economy")] == [True, False, False]


def test_hysteresis_keeps_shedding_until_pressure_clearly_falls() -> None:
    admission = TierAdmission(standard_at=90, economy_at=70, hysteresis=10)

    decisions = [admission.admit("economy", pressure) for pressure in (65, 70, 69, 61, 60, 59, 65, 70)]

    assert decisions == [True, False, False, False, False, True, True, False]


def test_measured_overload_sheds_economy_then_standard_never_vital_and_lets_go() -> None:
    clock = FakeClock()
    gauge = gauge_on(clock, capacity=20)
    admission = TierAdmission(standard_at=90, economy_at=70, hysteresis=10)

    def admitted() -> dict[str, bool]:
        return {tier: admission.admit(tier, gauge.score()) for tier in ("vital", "standard", "economy")}

    hold(gauge, 16)  # 80 % of capacity, sustained
    clock.advance(5.0)
    at_80 = admitted()
    hold(gauge, 6)  # 110 %
    clock.advance(5.0)
    over = admitted()
    release(gauge, 22)
    clock.advance(2.0)
    after = admitted()

    assert at_80 == {"vital": True, "standard": True, "economy": False}
    assert over == {"vital": True, "standard": False, "economy": False}
    assert after == {"vital": True, "standard": True, "economy": True}

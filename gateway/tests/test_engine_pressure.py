"""Pressure from concurrency, latency and errors; shedding by tier with hysteresis."""

from __future__ import annotations

from gateway.engine.pressure import PressureGauge, TierAdmission, combine


def test_an_idle_process_has_no_pressure() -> None:
    assert PressureGauge(capacity=100, slo_ms=200).reading().score == 0


def test_in_flight_requests_against_capacity() -> None:
    gauge = PressureGauge(capacity=10, slo_ms=200)
    for _ in range(8):
        gauge.started()

    assert gauge.reading().score == 80


def test_p95_latency_against_the_slo() -> None:
    gauge = PressureGauge(capacity=1000, slo_ms=200)
    for n in range(100):
        gauge.started()
        gauge.finished(400.0 if n >= 90 else 10.0, failed=False, now=1000.0)

    reading = gauge.reading(now=1000.5)

    assert reading.p95_ms == 400.0
    assert reading.score == 100  # p95 at twice the SLO


def test_upstream_errors() -> None:
    gauge = PressureGauge(capacity=1000, slo_ms=200)
    for n in range(20):
        gauge.started()
        gauge.finished(5.0, failed=n < 4, now=50.0)

    assert gauge.reading(now=50.0).score == 40  # 20 % errors of the 50 % that saturates


def test_a_handful_of_requests_is_not_enough_to_judge() -> None:
    gauge = PressureGauge(capacity=1000, slo_ms=200, min_samples=20)
    for _ in range(19):
        gauge.started()
        gauge.finished(5000.0, failed=True, now=1.0)

    assert gauge.reading(now=1.0).score == 0


def test_old_samples_leave_the_window() -> None:
    gauge = PressureGauge(capacity=1000, slo_ms=200, window_s=10, min_samples=1)
    gauge.started()
    gauge.finished(5000.0, failed=True, now=0.0)

    assert gauge.reading(now=5.0).score == 100
    assert gauge.reading(now=11.0).score == 0


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


def test_the_per_request_score_follows_concurrency_live_and_the_window_periodically() -> None:
    gauge = PressureGauge(capacity=10, slo_ms=200, min_samples=1)
    gauge.started()
    gauge.finished(5000.0, failed=False, now=100.0)

    assert gauge.score(now=100.0) == 100  # latency component, computed now
    for _ in range(5):
        gauge.started()
    assert gauge.score(now=100.1) == 100  # within recompute_s: the cached window still counts
    assert gauge.score(now=200.0) == 50  # window recomputed (sample expired); 5 of 10 in flight

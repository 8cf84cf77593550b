"""Writing check reports (monitors.checks): results, roll-ups, run state, the state machine's
thresholds and flips, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Tenant
from monitors.checks import RunState, claims_release, history_prune, reports_write, state_next
from monitors.engine.spec import CheckReport
from monitors.models import CheckResult, Flip, Monitor, MonitorRollup, MonitorState
from monitors.scheduler import Claim, monitors_claim

T0 = datetime(2026, 12, 1, 6, 0, 0, tzinfo=UTC)


def report(
    monitor_id: int, outcome: str, at: datetime, *, latency: float | None = 12.0, reason: str = ""
) -> CheckReport:
    return CheckReport(
        monitor_id=monitor_id,
        started_at=at.timestamp(),
        outcome=outcome,
        status_code=200 if outcome == "up" else 500,
        latency_ms=latency,
        reason=reason or ("" if outcome == "up" else "status 500, expected 200-299"),
        failed_condition="",
        cert_expiry_days=None,
        cert_expires_at=None,
        lag_ms=3.0,
    )


def claimed(monitor: Monitor, at: datetime) -> Claim:
    """Claims `monitor`'s next check, as the dispatcher would at `at`."""
    Monitor.objects.filter(pk=monitor.pk).update(next_due_at=at, claimed_until=None)
    (claim,) = monitors_claim(now=at, lookahead_seconds=0, margin_seconds=30, limit=10)
    return claim


def run(monitor: Monitor, outcomes: str, start: datetime = T0) -> list[int]:
    """Writes one check per letter of `outcomes` (u: up, d: down), 60 s apart; the flips' ids."""
    flips: list[int] = []
    for n, letter in enumerate(outcomes):
        at = start + timedelta(seconds=60 * n)
        flips += reports_write([(claimed(monitor, at), report(monitor.pk, "up" if letter == "u" else "down", at))])
    return flips


@pytest.fixture
def watched(tenant_a: Tenant) -> Monitor:
    return Monitor.objects.create(
        tenant=tenant_a, name="api", target="http://example.com/", failure_threshold=3, success_threshold=2
    )


# --- the state machine, pure -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "failures", "successes", "outcome", "expected"),
    [
        ("up", 1, 0, "down", "up"),  # two failures in a row: below the threshold of 3
        ("up", 2, 0, "down", "down"),  # the third: exactly at the threshold
        ("down", 0, 0, "up", "down"),  # one success: below 2
        ("down", 0, 1, "up", "up"),  # the second
        ("unknown", 0, 0, "up", "unknown"),
        ("unknown", 0, 1, "up", "up"),
        ("unknown", 2, 0, "down", "down"),
        ("down", 5, 0, "down", "down"),
        ("up", 0, 7, "up", "up"),
        ("maintenance", 2, 0, "down", "down"),  # the window closed: the counters decide
        ("maintenance", 0, 0, "up", "unknown"),
        ("paused", 0, 1, "up", "up"),  # resumed: follows the counters
    ],
)
def test_state_changes_only_at_its_threshold(
    state: str, failures: int, successes: int, outcome: str, expected: str
) -> None:
    after = state_next(
        RunState(state, failures, successes),
        outcome,
        failure_threshold=3,
        success_threshold=2,
        in_maintenance=False,
    )

    assert after.state == expected
    assert (after.failures, after.successes) == ((failures + 1, 0) if outcome == "down" else (0, successes + 1))


def test_inside_a_maintenance_window_the_state_is_maintenance_and_the_counters_still_count() -> None:
    after = state_next(RunState("up", 2, 0), "down", failure_threshold=3, success_threshold=2, in_maintenance=True)

    assert after == RunState("maintenance", 3, 0)


def test_a_paused_monitor_keeps_its_state_and_counters() -> None:
    after = state_next(
        RunState("paused", 0, 0), "down", failure_threshold=1, success_threshold=2, in_maintenance=False, enabled=False
    )

    assert after == RunState("paused", 0, 0)


# --- writes ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_monitor_goes_down_after_exactly_its_failure_threshold_and_up_after_its_success_threshold(
    watched: Monitor,
) -> None:
    states = []
    for n, letter in enumerate("uudddudduu"):
        run(watched, letter, T0 + timedelta(seconds=60 * n))
        watched.refresh_from_db()
        states.append(watched.state)

    flips = list(Flip.objects.order_by("id").values_list("old_state", "new_state", "reason"))
    assert states == [
        "unknown", "up",  # 2 successes
        "up", "up", "down",  # 3 failures
        "down", "down", "down",  # u d d: never 2 successes in a row
        "down", "up",
    ]  # fmt: skip
    assert flips == [
        ("unknown", "up", ""),
        ("up", "down", "status 500, expected 200-299"),
        ("down", "up", ""),
    ]
    assert watched.consecutive_successes == 2 and watched.consecutive_failures == 0
    assert watched.claimed_until is None
    assert watched.last_outcome == "up" and watched.last_checked_at == T0 + timedelta(seconds=540)
    assert CheckResult.objects.filter(monitor=watched).count() == 10


@pytest.mark.django_db
def test_a_flip_names_its_monitor_tenant_and_the_last_checks_reason(watched: Monitor) -> None:
    flip_ids = run(watched, "ddd")

    flip = Flip.objects.get()
    assert flip_ids == [flip.pk]
    assert (flip.tenant_id, flip.monitor_id) == (watched.tenant_id, watched.pk)
    assert (flip.old_state, flip.new_state, flip.reason) == ("unknown", "down", "status 500, expected 200-299")
    assert flip.processed_at is None


@pytest.mark.django_db
def test_a_report_whose_claim_is_no_longer_the_writers_is_recorded_but_leaves_the_state_alone(
    watched: Monitor,
) -> None:
    stale = claimed(watched, T0)
    current = claimed(watched, T0 + timedelta(minutes=5))  # the first claim lapsed and was taken again

    reports_write([(stale, report(watched.pk, "down", T0))])
    watched.refresh_from_db()

    assert CheckResult.objects.filter(monitor=watched).count() == 1
    assert watched.consecutive_failures == 0 and watched.last_checked_at is None
    assert watched.claimed_until == current.claimed_until


@pytest.mark.django_db
def test_a_paused_monitors_late_report_changes_no_state(watched: Monitor) -> None:
    claim = claimed(watched, T0)
    Monitor.objects.filter(pk=watched.pk).update(enabled=False, state=MonitorState.PAUSED)

    flips = reports_write([(claim, report(watched.pk, "up", T0)), (claim, report(watched.pk, "up", T0))])
    watched.refresh_from_db()

    assert flips == [] and watched.state == "paused"
    assert (watched.consecutive_successes, watched.last_outcome) == (0, "up")
    assert watched.claimed_until is None


@pytest.mark.django_db
def test_a_batch_of_many_monitors_writes_each_results_and_run_state(tenant_a: Tenant) -> None:
    monitors = Monitor.objects.bulk_create(
        Monitor(tenant=tenant_a, name=f"m{n}", target="http://example.com/", next_due_at=T0) for n in range(50)
    )
    claims = monitors_claim(now=T0, lookahead_seconds=0, margin_seconds=30, limit=100)
    outcome = {monitor.pk: "up" if monitor.pk % 2 else "down" for monitor in monitors}

    reports_write([(claim, report(claim.monitor_id, outcome[claim.monitor_id], T0)) for claim in claims])

    rows = dict(Monitor.objects.values_list("pk", "last_outcome"))
    assert rows == outcome
    assert CheckResult.objects.count() == 50
    assert not Monitor.objects.filter(claimed_until__isnull=False).exists()


@pytest.mark.django_db
def test_roll_ups_add_checks_failures_and_latency_per_hour_and_day(watched: Monitor) -> None:
    first_hour = [("up", 10.0), ("down", None), ("up", 30.0)]
    for n, (outcome, latency) in enumerate(first_hour):
        at = T0 + timedelta(minutes=10 * n)
        reports_write([(claimed(watched, at), report(watched.pk, outcome, at, latency=latency))])
    later = T0 + timedelta(hours=1, minutes=5)
    reports_write([(claimed(watched, later), report(watched.pk, "down", later, latency=50.0))])

    rollups = {
        (row.period, row.bucket): (row.checks, row.failures, row.latency_count, row.latency_sum_ms, row.latency_max_ms)
        for row in MonitorRollup.objects.filter(monitor=watched)
    }
    # The check without a latency (a timeout) counts as a check and a failure, not as a latency:
    # the first hour's mean is 40 / 2 = 20 ms, not 40 / 3.
    assert rollups == {
        ("hour", T0): (3, 1, 2, 40.0, 30.0),
        ("hour", T0 + timedelta(hours=1)): (1, 1, 1, 50.0, 50.0),
        ("day", T0.replace(hour=0)): (4, 2, 3, 90.0, 50.0),
    }


@pytest.mark.django_db
def test_retention_deletes_old_results_and_roll_ups_in_batches_and_keeps_recent_ones(watched: Monitor) -> None:
    now = T0
    for days in (31, 32, 33, 29):
        at = now - timedelta(days=days)
        reports_write([(claimed(watched, at), report(watched.pk, "up", at))])
    MonitorRollup.objects.create(monitor=watched, period="day", bucket=now - timedelta(days=100), checks=1)

    deleted = history_prune(now=now, batch_rows=2)

    assert deleted == {"results": 3, "hourly": 0, "daily": 0}
    assert list(CheckResult.objects.values_list("checked_at", flat=True)) == [now - timedelta(days=29)]
    assert history_prune(now=now + timedelta(days=70))["hourly"] == 4
    assert MonitorRollup.objects.filter(period="day").count() == 5


@pytest.mark.django_db
def test_a_claim_is_released_only_by_its_holder(watched: Monitor) -> None:
    stale = claimed(watched, T0)
    current = claimed(watched, T0 + timedelta(minutes=5))

    released = (claims_release([stale]), claims_release([current]))
    watched.refresh_from_db()

    assert released == (0, 1)
    assert watched.claimed_until is None

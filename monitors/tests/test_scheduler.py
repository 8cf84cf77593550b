"""The dispatcher's claim (monitors.scheduler): each due check claimed once, no drift, no burst
after an outage, an overrunning check not started twice, a lost claim lapsing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from accounts.models import Tenant
from monitors.models import Monitor
from monitors.scheduler import Claim, monitors_claim

T0 = datetime(2026, 12, 1, 6, 0, 0, 250_000, tzinfo=UTC)
MARGIN = 30.0


def claim(now: datetime, *, lookahead: float = 0.0, limit: int = 1000) -> list[Claim]:
    return monitors_claim(now=now, lookahead_seconds=lookahead, margin_seconds=MARGIN, limit=limit)


def monitor(tenant: Tenant, name: str = "api", *, due: datetime = T0, **fields: object) -> Monitor:
    defaults: dict[str, object] = {"interval_seconds": 60, "timeout_seconds": 10.0, "target": "http://example.com/"}
    return Monitor.objects.create(tenant=tenant, name=name, next_due_at=due, **{**defaults, **fields})


@pytest.mark.django_db
def test_a_due_monitor_is_claimed_once_and_its_next_due_time_is_the_previous_plus_the_interval(
    tenant_a: Tenant,
) -> None:
    watched = monitor(tenant_a)
    late = T0 + timedelta(seconds=4.4)  # the dispatcher ran late: the schedule must not move

    claims = claim(late)
    again = claim(late)

    watched.refresh_from_db()
    assert claims == [Claim(monitor_id=watched.pk, due_at=T0, claimed_until=T0 + timedelta(seconds=10 + MARGIN))]
    assert again == []
    assert watched.next_due_at == T0 + timedelta(seconds=60)
    assert watched.claimed_until == T0 + timedelta(seconds=40)


@pytest.mark.django_db
def test_successive_claims_keep_the_interval_without_drift(tenant_a: Tenant) -> None:
    watched = monitor(tenant_a)
    dues = []
    for n, lateness in enumerate((0.9, 0.2, 1.7)):
        for found in claim(T0 + timedelta(seconds=60 * n + lateness)):
            dues.append(found.due_at)
    watched.refresh_from_db()

    assert dues == [T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=120)]
    assert watched.next_due_at == T0 + timedelta(seconds=180)


@pytest.mark.django_db
def test_after_an_outage_one_check_runs_for_the_latest_slot_and_the_next_is_in_the_future(tenant_a: Tenant) -> None:
    watched = monitor(tenant_a)
    back = T0 + timedelta(hours=1, seconds=5)

    claims = claim(back)
    watched.refresh_from_db()

    assert [found.due_at for found in claims] == [T0 + timedelta(hours=1)]
    assert watched.next_due_at == T0 + timedelta(hours=1, seconds=60)
    assert claim(back + timedelta(seconds=1)) == []


@pytest.mark.django_db
def test_a_claimed_check_that_overruns_its_interval_is_not_started_again_until_its_claim_lapses(
    tenant_a: Tenant,
) -> None:
    # Interval 10 s, timeout 10 s: the claim runs to due + 10 + 30 s.
    watched = monitor(tenant_a, interval_seconds=10)
    assert [found.due_at for found in claim(T0)] == [T0]

    during = [claim(T0 + timedelta(seconds=s)) for s in (10.5, 25, 39.9)]
    lapsed = claim(T0 + timedelta(seconds=40.5))
    watched.refresh_from_db()

    assert during == [[], [], []]
    assert [found.due_at for found in lapsed] == [T0 + timedelta(seconds=40)]
    assert watched.next_due_at == T0 + timedelta(seconds=50)


@pytest.mark.django_db
def test_paused_monitors_are_never_claimed_and_the_lookahead_claims_checks_due_soon(tenant_a: Tenant) -> None:
    monitor(tenant_a, "paused", enabled=False)
    soon = monitor(tenant_a, "soon", due=T0 + timedelta(seconds=2))
    monitor(tenant_a, "later", due=T0 + timedelta(seconds=5))

    claims = claim(T0, lookahead=3.0)

    assert [(found.monitor_id, found.due_at) for found in claims] == [(soon.pk, T0 + timedelta(seconds=2))]


@pytest.mark.django_db
def test_a_claim_round_trips_through_its_task_message(tenant_a: Tenant) -> None:
    monitor(tenant_a)
    (found,) = claim(T0)

    assert Claim.from_message(found.as_message()) == found


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_dispatchers_claim_disjoint_sets(tenant_a: Tenant) -> None:
    Monitor.objects.bulk_create(
        Monitor(tenant=tenant_a, name=f"m{n}", target="http://example.com/", next_due_at=T0 - timedelta(seconds=n % 7))
        for n in range(300)
    )
    start = threading.Barrier(2)
    results: list[list[Claim]] = []
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(3):
                results.append(claim(T0, limit=120))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    claimed = [found.monitor_id for batch in results for found in batch]
    assert errors == []
    assert len(claimed) == len(set(claimed)) == 300

"""`fraud.tasks.transactions_rescore` against a real gRPC brain (tests.support.fake_brain): fail-open
rows get their late score once, a late decline raises `transaction.review`, a brain that is down
leaves them for the next run, and two concurrent runs score each row once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from pytest_django import Settings

from accounts.models import Tenant
from fraud.engine.transaction import History
from fraud.models import Transaction
from fraud.tasks import transactions_rescore
from fraud.tests.conftest import FAIL_OPEN, Record
from rules.models import Event
from tests.support.fake_brain import FakeBrain, fake_brain
from tests.support.threads import at_once

pytestmark = pytest.mark.django_db


@pytest.fixture
def brain(settings: Settings) -> Iterator[FakeBrain]:
    with fake_brain(score=0.95, model_version="fake-7") as running:
        settings.SENTINEL_FRAUD = {**settings.SENTINEL_FRAUD, "BRAIN_ADDRESS": running.address}
        yield running


def test_unscored_rows_are_scored_once_oldest_first(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    now = timezone.now()
    history = History(count_total=9, count_10m=4, last_at_ms=123, merchant_seen=True)
    newer = record(tenant_a, "tx-new", score=None, created_at=now)
    older = record(tenant_a, "tx-old", score=None, created_at=now - timedelta(minutes=5), history=history)
    scored = record(tenant_a, "tx-scored", score=0.1)

    assert transactions_rescore() == 2
    assert transactions_rescore() == 0

    assert [message.transaction_id for message in brain.received] == ["tx-old", "tx-new"]
    first = brain.received[0]
    assert first.tenant == str(tenant_a.uuid) and first.amount == 12.5 and first.currency == "EUR"
    assert (first.history.count_total, first.history.count_10m, first.history.merchant_seen) == (9, 4, True)
    assert first.created_at_ms == int(older.created_at.timestamp() * 1000)
    for row in (older, newer):
        row.refresh_from_db()
        # The late score beside the answer given, which stays the fail-open one (a replay gets it)
        assert (row.late_score, row.late_model_version, row.late_decision) == (0.95, "fake-7", "decline")
        assert row.late_reasons[0]["code"] == "amount_vs_habit" and row.rescored_at is not None
        assert (row.decision, row.scored, row.score, row.model_version) == ("approve", False, None, "")
        assert row.reasons[0]["code"] == FAIL_OPEN.code
    scored.refresh_from_db()
    assert scored.score == 0.1 and scored.rescored_at is None


def test_a_late_decline_is_a_review_event_in_rules(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=None)

    transactions_rescore()

    review = Event.objects.get(tenant=tenant_a, type="transaction.review")
    assert review.payload["transaction_id"] == row.transaction_id
    assert review.payload["late_decision"] == "decline" and review.payload["late_reasons"] == ["amount_vs_habit"]
    assert review.payload["late_score"] == 0.95 and review.payload["scored"] is False


def test_a_brain_that_is_down_leaves_the_rows_unscored(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    record(tenant_a, "tx-1", score=None)
    record(tenant_a, "tx-2", score=None)
    brain.stop()

    assert transactions_rescore() == 0
    assert Transaction.objects.unscored().count() == 2

    brain.restart()
    assert transactions_rescore() == 2
    assert not Transaction.objects.unscored().exists()


def test_a_failing_brain_stops_the_run_at_the_first_failure(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    record(tenant_a, "tx-1", score=None)
    record(tenant_a, "tx-2", score=None)
    brain.mode = "fail"

    assert transactions_rescore() == 0

    assert len(brain.received) == 1
    assert Transaction.objects.unscored().count() == 2


def test_a_run_stops_once_its_budget_is_spent(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    record(tenant_a, "tx-1", score=None)
    record(tenant_a, "tx-2", score=None)
    brain.mode, brain.delay_ms = "slow", 150  # slow, yet within the call's deadline

    assert transactions_rescore(budget_seconds=0.1) == 1

    assert Transaction.objects.unscored().count() == 1
    brain.mode = "ok"
    assert transactions_rescore() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_two_concurrent_runs_score_each_row_once(brain: FakeBrain, tenant_a: Tenant, record: Record) -> None:
    rows = [record(tenant_a, f"tx-{n}", score=None) for n in range(30)]

    counts = at_once(transactions_rescore)

    assert sum(counts) == len(rows)
    assert Transaction.objects.filter(late_score=0.95, rescored_at__isnull=False).count() == len(rows)
    assert Event.objects.filter(type="transaction.review").count() == len(rows)

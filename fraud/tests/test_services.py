"""`fraud.services`: a transaction recorded once with its rules event, idempotent under replays and
concurrent identical requests, and the one late score of a fail-open row."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Tenant
from fraud.engine.transaction import History, LedgerEntry, Reason, Score
from fraud.models import Transaction, TransactionOutbox
from fraud.selectors import tenant_thresholds, transaction_answer
from fraud.services import (
    TransactionConflict,
    transaction_record,
    transaction_rescore,
    transactions_emit,
    transactions_record,
    transactions_rescore,
)
from fraud.tests.conftest import FAIL_OPEN, Record, tx_in
from rules.models import Event, EventSource
from tests.support.threads import at_once

pytestmark = pytest.mark.django_db

LATE = Score(0.95, (Reason("burst_10m", "7 transactions in 10 minutes", 2.1),), "m-2")


def _record(tenant: Tenant, **fields: object) -> tuple[Transaction, bool]:
    return transaction_record(
        entry=LedgerEntry(
            tenant_id=tenant.pk,
            tx=tx_in("tx-1", **fields),
            decision="approve",
            scored=True,
            score=0.2,
            reasons=[Reason("amount_vs_habit", "amount 1.1x", 0.3)],
            model_version="m-1",
            history=History(count_total=1),
            created_at=timezone.now(),
        )
    )


def test_a_transaction_is_stored_with_its_rules_event_queued(tenant_a: Tenant) -> None:
    row, created = _record(tenant_a)

    assert created
    assert row.amount == Decimal("12.50") and row.history["count_total"] == 1
    assert list(TransactionOutbox.objects.values_list("pk", flat=True)) == [row.pk]
    assert not Event.objects.exists()  # made by the worker, not on the request's path

    assert transactions_emit() == 1

    assert not TransactionOutbox.objects.exists()
    event = Event.objects.get(tenant=tenant_a)
    assert event.type == "transaction"
    assert event.source == EventSource.FRAUD
    assert event.payload == {
        "type": "transaction",
        "transaction_id": "tx-1",
        "user_id": "user-1",
        "amount": 12.5,
        "currency": "EUR",
        "merchant": "shop",
        "country": "FR",
        "decision": "approve",
        "score": 0.2,
        "scored": True,
        "reasons": ["amount_vs_habit"],
        "model_version": "m-1",
    }


def test_a_replay_returns_the_first_row_and_stores_nothing(tenant_a: Tenant) -> None:
    first, _ = _record(tenant_a)

    again, created = _record(tenant_a, amount=Decimal("12.5"))  # the same amount, written otherwise

    assert not created and again.pk == first.pk
    assert transaction_answer(again) == transaction_answer(first)
    assert Transaction.objects.count() == 1 and TransactionOutbox.objects.count() == 1


def test_a_replay_with_other_fields_is_a_conflict(tenant_a: Tenant) -> None:
    first, _ = _record(tenant_a)

    with pytest.raises(TransactionConflict) as raised:
        _record(tenant_a, amount=Decimal("99.00"))

    assert raised.value.status_code == 409 and raised.value.code == "idempotency_conflict"
    assert raised.value.existing.pk == first.pk
    assert Transaction.objects.count() == 1


def test_the_same_transaction_id_in_another_tenant_is_another_transaction(tenant_a: Tenant, tenant_b: Tenant) -> None:
    _record(tenant_a)

    _, created = _record(tenant_b, amount=Decimal("99.00"))

    assert created and Transaction.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_two_concurrent_identical_requests_leave_one_row_and_both_get_it(tenant_a: Tenant) -> None:
    results = at_once(lambda: _record(tenant_a))

    assert sorted(created for _, created in results) == [False, True]
    assert len({row.pk for row, _ in results}) == 1
    assert Transaction.objects.count() == 1 and TransactionOutbox.objects.count() == 1


def _entry(tenant: Tenant, transaction_id: str) -> LedgerEntry:
    return LedgerEntry(
        tenant_id=tenant.pk,
        tx=tx_in(transaction_id),
        decision="approve",
        scored=True,
        score=0.1,
        reasons=(),
        model_version="m-1",
        history=History(),
        created_at=timezone.now(),
    )


def test_the_outbox_gives_each_tenant_its_events_in_batches(tenant_a: Tenant, tenant_b: Tenant) -> None:
    transactions_record(entries=[_entry(tenant_a, f"a-{n}") for n in range(5)] + [_entry(tenant_b, "b-0")])

    assert transactions_emit(limit=4) == 4
    assert transactions_emit(limit=4) == 2
    assert transactions_emit(limit=4) == 0

    ids = {tenant.pk: set(Event.objects.filter(tenant=tenant).values_list("payload__transaction_id", flat=True))
           for tenant in (tenant_a, tenant_b)}  # fmt: skip
    assert ids == {tenant_a.pk: {f"a-{n}" for n in range(5)}, tenant_b.pk: {"b-0"}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent workers need PostgreSQL")
def test_two_workers_emptying_the_outbox_at_once_make_each_event_once(tenant_a: Tenant) -> None:
    transactions_record(entries=[_entry(tenant_a, f"tx-{n}") for n in range(300)])

    def drain() -> int:
        made = 0
        while (batch := transactions_emit(limit=20)) > 0:
            made += batch
        return made

    assert sum(at_once(drain, times=3)) == 300
    assert Event.objects.filter(tenant=tenant_a, type="transaction").count() == 300
    assert not TransactionOutbox.objects.exists()


def test_a_rescore_fills_a_fail_open_row_once(tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=None)

    rescored = transaction_rescore(pk=row.pk, score=LATE)
    again = transaction_rescore(pk=row.pk, score=Score(0.01, (), "m-3"))

    assert rescored is not None and again is None
    stored = Transaction.objects.get(pk=row.pk)
    assert (stored.late_score, stored.late_model_version, stored.late_decision) == (0.95, "m-2", "decline")
    assert stored.late_reasons == [
        {"code": "burst_10m", "message": "7 transactions in 10 minutes", "contribution": 2.1}
    ]
    assert stored.rescored_at is not None
    # What the client was answered never changes, so a replay answers it again
    assert (stored.decision, stored.scored, stored.score, stored.model_version) == ("approve", False, None, "")
    assert transaction_answer(stored) == transaction_answer(row)


def test_a_late_decline_raises_a_review_event(tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=None)

    transaction_rescore(pk=row.pk, score=LATE)

    review = Event.objects.get(tenant=tenant_a, type="transaction.review")
    assert review.payload["late_decision"] == "decline" and review.payload["late_score"] == 0.95
    assert review.payload["transaction_id"] == row.transaction_id and review.payload["decision"] == "approve"


def test_a_run_of_late_scores_gives_each_tenant_its_review_events_in_one_ingest(
    tenant_a: Tenant, tenant_b: Tenant, record: Record
) -> None:
    rows = [record(tenant_a, f"a-{n}", score=None) for n in range(3)] + [record(tenant_b, "b-0", score=None)]
    low = Score(0.01, (), "m-2")

    updated = transactions_rescore(
        scores=[(row.pk, LATE) for row in rows[:3]] + [(rows[3].pk, LATE), (rows[0].pk, low)]
    )

    # The last pair is row a-0 again: it has its late score already
    assert [row is not None for row in updated] == [True, True, True, True, False]
    reviews = Event.objects.filter(type="transaction.review")
    by_tenant = {tenant.pk: sorted(reviews.filter(tenant=tenant).values_list("payload__transaction_id", flat=True))
                 for tenant in (tenant_a, tenant_b)}  # fmt: skip
    assert by_tenant == {tenant_a.pk: ["a-0", "a-1", "a-2"], tenant_b.pk: ["b-0"]}
    # One ingest per tenant: its events share one reception time
    assert reviews.filter(tenant=tenant_a).values("received_at").distinct().count() == 1


def test_a_late_approval_raises_no_review_event(tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=None)

    transaction_rescore(pk=row.pk, score=Score(0.05, (), "m-2"))

    assert Transaction.objects.get(pk=row.pk).late_decision == "approve"
    assert not Event.objects.filter(type="transaction.review").exists()


def test_a_scored_row_is_never_rescored(tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=0.3)

    assert transaction_rescore(pk=row.pk, score=LATE) is None
    assert Transaction.objects.get(pk=row.pk).score == 0.3


def test_the_late_decision_follows_the_tenants_thresholds(tenant_a: Tenant, record: Record) -> None:
    tenant_a.fraud_review_threshold, tenant_a.fraud_decline_threshold = 0.2, 0.99
    tenant_a.save()
    row = record(tenant_a, score=None)

    transaction_rescore(pk=row.pk, score=LATE)

    assert tenant_thresholds(tenant_a) == (0.2, 0.99)
    assert Transaction.objects.get(pk=row.pk).late_decision == "review"
    assert Event.objects.get(type="transaction.review").payload["late_decision"] == "review"


def test_the_thresholds_fall_back_to_the_settings(tenant_a: Tenant, settings: object) -> None:
    assert tenant_thresholds(tenant_a) == (0.5, 0.9)


def test_a_fail_open_row_keeps_its_reason_until_scored(tenant_a: Tenant, record: Record) -> None:
    row = record(tenant_a, score=None)

    answer = transaction_answer(row)

    assert answer["scored"] is False and answer["score"] is None
    assert answer["reasons"] == [FAIL_OPEN.to_json()]

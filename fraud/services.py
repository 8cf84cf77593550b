"""Writes of the fraud ledger (CONVENTIONS 1), the only ones anywhere: a transaction recorded once
with its rules event, and the one late score a fail-open row may receive. Nothing else updates or
deletes a `Transaction` (fraud/models.py: append-only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Tenant
from core.errors import Conflict
from fraud.engine.transaction import History, Reason, Score, TransactionIn, decide
from fraud.models import Decision, Transaction
from fraud.selectors import tenant_thresholds, transaction_find
from rules import services as rules_services
from rules.models import EventSource

# A late score at or above the review threshold raises this event: the client was already
# approved, so a person must look at it (a late `review` too, not only a late `decline`).
LATE_ALERT_DECISIONS = (Decision.REVIEW, Decision.DECLINE)


class TransactionConflict(Conflict):
    """A replay of `transaction_id` whose fields differ from the first request's (409
    `idempotency_conflict`); `existing` is the row the first request left, unchanged."""

    code = "idempotency_conflict"

    def __init__(self, existing: Transaction) -> None:
        super().__init__(
            f"Transaction {existing.transaction_id!r} was already submitted with other fields.",
            details={"transaction_id": existing.transaction_id},
        )
        self.existing = existing


def _event_payload(row: Transaction) -> dict[str, Any]:
    """The rules event of a transaction (SPEC 6: events of type `transaction`)."""
    return {
        "type": "transaction",
        "transaction_id": row.transaction_id,
        "user_id": row.user_id,
        "amount": float(row.amount),
        "currency": row.currency,
        "merchant": row.merchant,
        "country": row.country,
        "decision": row.decision,
        "score": row.score,
        "scored": row.scored,
        "reasons": [reason["code"] for reason in row.reasons],
        "model_version": row.model_version,
    }


def _replayed(tenant_id: int, tx: TransactionIn, request_hash: str) -> Transaction | None:
    existing = transaction_find(tenant_id=tenant_id, transaction_id=tx.transaction_id)
    if existing is not None and existing.request_hash != request_hash:
        raise TransactionConflict(existing)
    return existing


def transaction_record(
    *,
    tenant_id: int,
    tx: TransactionIn,
    decision: str,
    scored: bool,
    score: float | None,
    reasons: Sequence[Reason],
    model_version: str,
    history: History,
    created_at: datetime,
) -> tuple[Transaction, bool]:
    """Stores a decided transaction and its rules event (`type: transaction`, source `fraud`) in
    one database transaction. Returns (row, True) when stored, (the first row, False) when the
    tenant already has `tx.transaction_id` with the same `tx.request_hash()`: a replay, also when
    a concurrent identical request stored it first. `reasons` strongest first; `score` None only
    when `scored` is False (a fail-open approval).

    Raises TransactionConflict (409) when the stored row's request hash differs; IntegrityError
    for any other constraint (an amount <= 0, an unknown tenant), which validation rules out."""
    request_hash = tx.request_hash()
    row = Transaction(
        tenant_id=tenant_id,
        transaction_id=tx.transaction_id,
        user_id=tx.user_id,
        amount=tx.amount,
        currency=tx.currency,
        merchant=tx.merchant,
        country=tx.country,
        request_hash=request_hash,
        decision=decision,
        scored=scored,
        score=score,
        reasons=[reason.to_json() for reason in reasons],
        model_version=model_version,
        history=history.to_json(),
        created_at=created_at,
    )
    with transaction.atomic():
        try:
            # Insert first, look second: the unique constraint, not a prior SELECT, settles two
            # concurrent identical requests (the loser waits for the winner's commit, then fails
            # here); the savepoint keeps the outer transaction usable for the lookup.
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            existing = _replayed(tenant_id, tx, request_hash)
            if existing is None:
                raise
            return existing, False
        # The tenant's id is all the event row needs: no query for the whole tenant on the hot path.
        rules_services.event_ingest(
            tenant=Tenant(pk=tenant_id), payloads=[_event_payload(row)], source=EventSource.FRAUD
        )
    return row, True


def transaction_rescore(*, pk: int, score: Score) -> Transaction | None:
    """Gives the fail-open row `pk` its late score, once: `score`, its reasons and model version,
    `rescored_at` now, `scored` true and `late_decision` by the tenant's thresholds now
    (`fraud.selectors.tenant_thresholds`, `fraud.engine.transaction.decide`). `decision`, what
    the client was answered, never changes. When the late decision is review or decline, a rules
    event `transaction.review` (the transaction's payload + `late_decision`) is stored in the
    same database transaction.

    Returns the updated row, or None when it was scored already (by another worker: the
    conditional UPDATE makes two concurrent re-scores one). Raises Transaction.DoesNotExist
    for an unknown pk."""
    with transaction.atomic():
        row = Transaction.objects.select_related("tenant").get(pk=pk)
        review, decline = tenant_thresholds(row.tenant)
        changes: dict[str, Any] = {
            "scored": True,
            "score": score.score,
            "reasons": [reason.to_json() for reason in score.reasons],
            "model_version": score.model_version,
            "rescored_at": timezone.now(),
            "late_decision": decide(score.score, review, decline),
        }
        # The claim: of two workers re-scoring one row, the second's UPDATE waits for the first's
        # commit, then matches nothing.
        if not Transaction.objects.filter(pk=pk, scored=False).update(**changes):
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        if row.late_decision in LATE_ALERT_DECISIONS:
            payload = _event_payload(row) | {"type": "transaction.review", "late_decision": row.late_decision}
            rules_services.event_ingest(tenant=row.tenant, payloads=[payload], source=EventSource.FRAUD)
    return row

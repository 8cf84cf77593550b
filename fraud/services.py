"""The fraud ledger's writes. MINIMAL STAND-IN written by the "path" helper to test the endpoint
before the merge; the lead keeps the "ledger" helper's version of this module."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import IntegrityError, transaction

from fraud.engine.transaction import History, Reason, TransactionIn
from fraud.models import Transaction


class TransactionConflict(Exception):
    """The tenant's transaction_id exists with another request hash."""


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
    """(row, created): a new row, or the existing one with the same hash. Raises TransactionConflict."""
    request_hash = tx.request_hash()
    try:
        with transaction.atomic():
            row = Transaction.objects.create(
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
        return row, True
    except IntegrityError:
        # The unique (tenant, transaction_id) constraint: a concurrent twin committed first.
        existing = Transaction.objects.get(tenant_id=tenant_id, transaction_id=tx.transaction_id)
        if existing.request_hash != request_hash:
            raise TransactionConflict(tx.transaction_id) from None
        return existing, False

"""Fixtures of the fraud ledger's tests: transactions recorded through the one service that writes
them, as the hot path records them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant
from fraud.engine.transaction import History, LedgerEntry, Reason, TransactionIn
from fraud.models import Transaction
from fraud.services import transaction_record

Record = Callable[..., Transaction]
FAIL_OPEN = Reason("brain_unavailable", "The fraud brain could not be reached.")
SCORED_REASON = Reason("amount_vs_habit", "amount 14.2x the user's usual", 1.25)


def tx_in(transaction_id: str = "tx-1", **fields: Any) -> TransactionIn:
    values: dict[str, Any] = {
        "user_id": "user-1",
        "amount": Decimal("12.50"),
        "currency": "EUR",
        "merchant": "shop",
        "country": "FR",
    } | fields
    return TransactionIn(transaction_id=transaction_id, **values)


def record_tx(
    tenant: Tenant,
    transaction_id: str = "tx-1",
    *,
    score: float | None = 0.1,
    decision: str = "approve",
    created_at: datetime | None = None,
    history: History | None = None,
    **fields: Any,
) -> Transaction:
    """A transaction as the hot path records it: scored with `score`, or fail-open when None."""
    row, _ = transaction_record(
        entry=LedgerEntry(
            tenant_id=tenant.pk,
            tx=tx_in(transaction_id, **fields),
            decision=decision,
            scored=score is not None,
            score=score,
            reasons=[SCORED_REASON] if score is not None else [FAIL_OPEN],
            model_version="m-1" if score is not None else "",
            history=history or History(count_total=3, log_amount_mean=2.0),
            created_at=created_at or timezone.now(),
        )
    )
    return row


@pytest.fixture
def record() -> Record:
    return record_tx

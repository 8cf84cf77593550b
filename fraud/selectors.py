"""The fraud ledger's reads. MINIMAL STAND-IN written by the "path" helper to test the endpoint
before the merge; the lead keeps the "ledger" helper's version of this module."""

from __future__ import annotations

from typing import Any

from fraud.models import Transaction


def transaction_find(*, tenant_id: int, transaction_id: str) -> Transaction | None:
    return Transaction.objects.filter(tenant_id=tenant_id, transaction_id=transaction_id).first()


def transaction_answer(row: Transaction) -> dict[str, Any]:
    """The JSON answer of POST /transaction for this row."""
    return {
        "transaction_id": row.transaction_id,
        "decision": row.decision,
        "score": row.score if row.scored else None,
        "scored": row.scored,
        "reasons": row.reasons,
        "model_version": row.model_version,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
    }

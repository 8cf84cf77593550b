"""Between the brain's shapes and fraud.proto's messages, and realistic requests for benchmarks."""

from __future__ import annotations

from fraud.brain.synthetic import SEED, Labelled, generate
from fraud.engine.messages import history_message
from fraud.protos import fraud_pb2


def transaction_message(
    row: Labelled, *, tenant: str = "", currency: str = "EUR", index: int = 0
) -> fraud_pb2.Transaction:
    """A Score request for a row of the synthetic set (`index` makes its transaction_id unique)."""
    return fraud_pb2.Transaction(
        transaction_id=f"syn-{row.user_id}-{index}",
        tenant=tenant,
        user_id=row.user_id,
        amount=row.tx.amount,
        currency=currency,
        merchant=row.tx.merchant,
        country=row.tx.country,
        created_at_ms=row.tx.at_ms,
        history=history_message(row.history),
    )


def sample_requests(count: int, *, seed: int = SEED + 1) -> list[fraud_pb2.Transaction]:
    """`count` realistic Score requests (honest and fraud mixed as in training, ~2.7 % fraud),
    from a synthetic set of another seed than the model's, so none was trained on."""
    rows: list[Labelled] = []
    users = max(count // 40, 5)
    while len(rows) < count:
        rows = generate(seed, users=users)
        users *= 2
    return [transaction_message(row, index=i) for i, row in enumerate(rows[:count])]

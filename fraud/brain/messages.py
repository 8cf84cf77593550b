"""Between the brain's shapes and fraud.proto's messages, and realistic requests for benchmarks."""

from __future__ import annotations

from dataclasses import asdict

from fraud.brain.synthetic import SEED, Labelled, generate
from fraud.engine.transaction import History
from fraud.protos import fraud_pb2


def history_from_message(message: fraud_pb2.History) -> History:
    """fraud.proto's History as fraud.engine's (field for field)."""
    return History(
        count_total=message.count_total,
        count_10m=message.count_10m,
        count_1h=message.count_1h,
        count_24h=message.count_24h,
        small_count_1h=message.small_count_1h,
        amount_1h=message.amount_1h,
        log_amount_mean=message.log_amount_mean,
        log_amount_std=message.log_amount_std,
        last_at_ms=message.last_at_ms,
        country_seen=message.country_seen,
        merchant_seen=message.merchant_seen,
        countries_24h=message.countries_24h,
    )


def history_to_message(history: History) -> fraud_pb2.History:
    return fraud_pb2.History(**asdict(history))


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
        history=history_to_message(row.history),
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

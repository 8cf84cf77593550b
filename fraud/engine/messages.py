"""Between the shared shapes and fraud.proto's messages, in one place: a `TransactionIn` and its
`History` into the `fraud_pb2.Transaction` the hot path's client and the re-score task send (so
the brain gets the same message for the same transaction), and a message's `History` back, as the
brain reads it. No Django."""

from __future__ import annotations

from dataclasses import fields

from fraud.engine.transaction import History, Reason, Score, TransactionIn
from fraud.protos import fraud_pb2


def history_message(history: History) -> fraud_pb2.History:
    """fraud.proto's `History`, field for field (the dataclass mirrors the message)."""
    return fraud_pb2.History(**history.to_json())


def history_from_message(message: fraud_pb2.History) -> History:
    """The `History` a message carries (what the brain reads from a request)."""
    return History(**{field.name: getattr(message, field.name) for field in fields(History)})


def transaction_message(
    tx: TransactionIn, history: History, tenant_uuid: str, created_at_ms: int
) -> fraud_pb2.Transaction:
    """fraud.proto's `Transaction`: `amount` as a double in major units (the model's input is a
    float; the ledger keeps the exact Decimal), `tenant_uuid` dashed text, `created_at_ms` Unix
    epoch milliseconds of the moment the web process received it."""
    return fraud_pb2.Transaction(
        transaction_id=tx.transaction_id,
        tenant=tenant_uuid,
        user_id=tx.user_id,
        amount=float(tx.amount),
        currency=tx.currency,
        merchant=tx.merchant,
        country=tx.country,
        created_at_ms=created_at_ms,
        history=history_message(history),
    )


def score_from_reply(reply: fraud_pb2.ScoreReply) -> Score:
    """The brain's answer as a `Score` (what the hot path's client and the re-score task both
    read). Raises ValueError when its score is not a probability (NaN included)."""
    if not 0.0 <= reply.score <= 1.0:
        raise ValueError(f"score {reply.score!r} is not within 0..1")
    reasons = tuple(Reason(reason.code, reason.message, reason.contribution) for reason in reply.reasons)
    return Score(float(reply.score), reasons, reply.model_version)

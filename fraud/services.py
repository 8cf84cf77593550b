"""Writes of the fraud ledger (CONVENTIONS 1), the only ones anywhere: a transaction recorded once
with its rules event, and the one late score a fail-open row may receive. Nothing else updates or
deletes a `Transaction` (fraud/models.py: append-only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Tenant
from core.errors import Conflict
from fraud.engine.transaction import LedgerEntry, Score, decide
from fraud.models import Decision, Transaction
from fraud.selectors import tenant_thresholds, transactions_by_key
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


def _row(entry: LedgerEntry) -> Transaction:
    return Transaction(
        tenant_id=entry.tenant_id,
        transaction_id=entry.tx.transaction_id,
        user_id=entry.tx.user_id,
        amount=entry.tx.amount,
        currency=entry.tx.currency,
        merchant=entry.tx.merchant,
        country=entry.tx.country,
        request_hash=entry.tx.request_hash(),
        decision=entry.decision,
        scored=entry.scored,
        score=entry.score,
        reasons=[reason.to_json() for reason in entry.reasons],
        model_version=entry.model_version,
        history=entry.history.to_json(),
        created_at=entry.created_at,
    )


# (the row, True when this call stored it) or the conflict a replay with other fields is.
LedgerOutcome = tuple[Transaction, bool] | TransactionConflict

# The columns an insert writes (every concrete field but the primary key), and the insert that
# skips the (tenant, transaction_id) already stored; the same SQL on PostgreSQL and SQLite >= 3.35.
# Built from the model's own column names; every value is a parameter.
_INSERT_FIELDS = [field for field in Transaction._meta.concrete_fields if not field.primary_key]
_INSERT_NEW = (
    "INSERT INTO fraud_transaction ("  # noqa: S608
    + ", ".join(str(field.column) for field in _INSERT_FIELDS)
    + ") VALUES {rows} ON CONFLICT (tenant_id, transaction_id) DO NOTHING RETURNING id, tenant_id, transaction_id"
)


def transaction_record(*, entry: LedgerEntry) -> tuple[Transaction, bool]:
    """Stores one decided transaction and its rules event: `transactions_record` for one entry.

    Returns (row, True) when stored, (the first row, False) for a replay. Raises
    TransactionConflict (409) when the stored row's request hash differs."""
    (outcome,) = transactions_record(entries=[entry])
    if isinstance(outcome, TransactionConflict):
        raise outcome
    return outcome


def transactions_record(*, entries: Sequence[LedgerEntry]) -> list[LedgerOutcome]:
    """Stores decided transactions and their rules events (`type: transaction`, source `fraud`)
    in one database transaction (the web process's group commit: `fraud.runtime.LedgerWriter`).

    One outcome per entry, in order: (row, True) when stored; (the first row, False) when the
    tenant already has the entry's `transaction_id` with the same request hash — a replay, also
    when a concurrent identical request (in another process, or earlier in `entries`) stored it
    first; a TransactionConflict (409) when the stored row's hash differs.

    One `INSERT … ON CONFLICT (tenant, transaction_id) DO NOTHING RETURNING` settles them all: the
    unique constraint, not a prior SELECT, decides between concurrent identical requests (the
    loser waits for the winner's commit and skips), and the rows it skipped are read back in one
    query. Should the batch fail on another constraint (a tenant deleted since the endpoint loaded
    it), each entry is stored alone, so one bad entry fails only itself (IntegrityError)."""
    if not entries:
        return []
    try:
        with transaction.atomic():
            return _record_batch(entries)
    except IntegrityError:
        if len(entries) == 1:
            raise
    outcomes: list[LedgerOutcome] = []
    for entry in entries:
        with transaction.atomic():
            outcomes.extend(_record_batch([entry]))
    return outcomes


def _record_batch(entries: Sequence[LedgerEntry]) -> list[LedgerOutcome]:
    rows = [_row(entry) for entry in entries]
    inserted = _insert_new(rows)
    missing = {(row.tenant_id, row.transaction_id) for row in rows} - set(inserted)
    existing = transactions_by_key(missing)
    outcomes: list[LedgerOutcome] = []
    stored: list[Transaction] = []
    for row in rows:
        key = (row.tenant_id, row.transaction_id)
        if key in inserted and inserted[key] is row:
            stored.append(row)
            outcomes.append((row, True))
            continue
        first = inserted.get(key) or existing[key]
        outcomes.append((first, False) if first.request_hash == row.request_hash else TransactionConflict(first))
    for tenant_id, payloads in _events_by_tenant(stored).items():
        # The tenant's id is all the event rows need: no query for the whole tenant on the hot path.
        rules_services.event_ingest(tenant=Tenant(pk=tenant_id), payloads=payloads, source=EventSource.FRAUD)
    return outcomes


def _insert_new(rows: Sequence[Transaction]) -> dict[tuple[int, str], Transaction]:
    """INSERTs `rows` whose (tenant, transaction_id) is new, the first of twins only; returns the
    stored ones by key, their `pk` set. The same SQL on PostgreSQL and SQLite (>= 3.35)."""
    firsts: dict[tuple[int, str], Transaction] = {}
    for row in rows:
        firsts.setdefault((row.tenant_id, row.transaction_id), row)
    row_placeholders = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
    params = [
        field.get_db_prep_save(getattr(row, field.attname), connection)
        for row in firsts.values()
        for field in _INSERT_FIELDS
    ]
    sql = _INSERT_NEW.format(rows=", ".join([row_placeholders] * len(firsts)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    stored: dict[tuple[int, str], Transaction] = {}
    for pk, tenant_id, transaction_id in returned:
        row = firsts[(tenant_id, transaction_id)]
        row.pk = pk
        row._state.adding = False
        stored[(tenant_id, transaction_id)] = row
    return stored


def _events_by_tenant(rows: Sequence[Transaction]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.tenant_id, []).append(_event_payload(row))
    return grouped


def transaction_rescore(*, pk: int, score: Score) -> Transaction | None:
    """Gives the fail-open row `pk` its late score, once: `late_score`, `late_reasons`,
    `late_model_version`, `late_decision` by the tenant's thresholds now
    (`fraud.selectors.tenant_thresholds`, `fraud.engine.transaction.decide`) and `rescored_at`
    now. What the client was answered (`decision`, `scored` false, `score` null, the fail-open
    reason) never changes, so a replay still gets the first answer. When the late decision is
    review or decline, a rules event `transaction.review` (the transaction's payload with
    `late_decision`, `late_score` and `late_reasons`) is stored in the same database transaction.

    Returns the updated row, or None when it had its late score already (another worker: the
    conditional UPDATE makes two concurrent re-scores one) or was scored when answered. Raises
    Transaction.DoesNotExist for an unknown pk."""
    with transaction.atomic():
        row = Transaction.objects.select_related("tenant").get(pk=pk)
        review, decline = tenant_thresholds(row.tenant)
        changes: dict[str, Any] = {
            "late_score": score.score,
            "late_reasons": [reason.to_json() for reason in score.reasons],
            "late_model_version": score.model_version,
            "late_decision": decide(score.score, review, decline),
            "rescored_at": timezone.now(),
        }
        # The claim: of two workers re-scoring one row, the second's UPDATE waits for the first's
        # commit, then matches nothing.
        if not Transaction.objects.unscored().filter(pk=pk).update(**changes):
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        if row.late_decision in LATE_ALERT_DECISIONS:
            payload = _event_payload(row) | {
                "type": "transaction.review",
                "late_decision": row.late_decision,
                "late_score": row.late_score,
                "late_reasons": [reason["code"] for reason in row.late_reasons],
            }
            rules_services.event_ingest(tenant=row.tenant, payloads=[payload], source=EventSource.FRAUD)
    return row

"""Celery tasks of the fraud app: the rules events of new transactions, and the re-score of
fail-open transactions (CONVENTIONS 7)."""

from __future__ import annotations

import logging
import time

import grpc
from celery import shared_task
from django.utils import timezone

from core.conf import sentinel_settings
from fraud import services
from fraud.engine.messages import score_from_reply, transaction_message
from fraud.engine.transaction import History, Score, TransactionIn
from fraud.models import Transaction
from fraud.protos import fraud_pb2, fraud_pb2_grpc
from fraud.selectors import transactions_unscored

logger = logging.getLogger(__name__)

# One Score call's deadline: generous next to the hot path's 100 ms, since nobody waits for the
# answer, yet short enough that a hung brain does not hold the worker past the next run.
RESCORE_TIMEOUT_SECONDS = 2.0
# Late scores stored per database transaction: their review events go to the rules engine one
# ingest per tenant per commit (one evaluation queued per tenant, not per row).
RESCORE_COMMIT = 100
# A run stops after this long, leaving the rest to the next: a brain answering slowly but within
# the deadline (500 rows x ~2 s) would otherwise hold the worker past CELERY_TASK_SOFT_TIME_LIMIT.
RUN_BUDGET_SECONDS = 60.0


def _message(row: Transaction) -> fraud_pb2.Transaction:
    tx = TransactionIn(
        transaction_id=row.transaction_id,
        user_id=row.user_id,
        amount=row.amount,
        currency=row.currency,
        merchant=row.merchant,
        country=row.country,
    )
    created_at_ms = int(row.created_at.timestamp() * 1000)
    return transaction_message(tx, History.from_json(row.history), str(row.tenant.uuid), created_at_ms)


def _status(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return code.name if code is not None else type(exc).__name__


@shared_task(name="fraud.tasks.transactions_rescore")
def transactions_rescore(budget_seconds: float = RUN_BUDGET_SECONDS) -> int:
    """Scores up to RESCORE_BATCH fail-open transactions, oldest first, with the history each
    saw when it arrived, through the brain's SYNC client (grpc.aio allows one event loop per
    process; a worker has none). Stops at the first brain failure, or once `budget_seconds` have
    passed: the next run (beat, every RESCORE_SECONDS) goes on. Safe with two workers:
    `services.transactions_rescore` scores a row once. Returns the number of rows this run scored."""
    conf = sentinel_settings.fraud
    deadline = time.monotonic() + budget_seconds
    pks = transactions_unscored(limit=conf.RESCORE_BATCH)
    if not pks:
        return 0
    scored = 0
    waiting: list[tuple[int, Score]] = []  # scores not stored yet: stored RESCORE_COMMIT at a time

    def store() -> None:
        nonlocal scored
        scored += sum(row is not None for row in services.transactions_rescore(scores=waiting))
        waiting.clear()

    with grpc.insecure_channel(conf.BRAIN_ADDRESS) as channel:
        stub = fraud_pb2_grpc.FraudBrainStub(channel)  # type: ignore[no-untyped-call]  # generated, no stubs
        for row in Transaction.objects.select_related("tenant").filter(pk__in=pks).order_by("created_at", "id"):
            if row.rescored_at is not None:  # another worker got there since the queue was read
                continue
            try:
                waiting.append((row.pk, score_from_reply(stub.Score(_message(row), timeout=RESCORE_TIMEOUT_SECONDS))))
            except (grpc.RpcError, ValueError) as exc:  # no answer, or not a probability
                logger.warning(
                    "fraud re-score stopped: the brain did not answer",
                    extra={"transaction": row.pk, "grpc_status": _status(exc), "left": len(pks) - scored},
                )
                break
            if len(waiting) >= RESCORE_COMMIT:
                store()
            if time.monotonic() >= deadline:
                break
    store()
    logger.info("fraud re-score run", extra={"scored": scored, "at": timezone.now().isoformat()})
    return scored


# A run of the events task stops after this long and leaves the rest to the next (beat, every
# EMIT_SECONDS): ~1,000 events a batch take a fraction of a second, so this is a backlog's bound.
EMIT_BUDGET_SECONDS = 20.0


@shared_task(name="fraud.tasks.transactions_emit", acks_late=True)
def transactions_emit(budget_seconds: float = EMIT_BUDGET_SECONDS) -> int:
    """Makes the rules events of the transactions waiting in the outbox
    (`services.transactions_emit`, a batch at a time) until none waits or `budget_seconds` have
    passed. Safe to run twice at once and after a crash: each event is made once, in the database
    transaction that takes its transaction out of the outbox. Returns the number of events made."""
    deadline = time.monotonic() + budget_seconds
    made = 0
    while (batch := services.transactions_emit()) > 0:
        made += batch
        if time.monotonic() >= deadline:
            break
    return made

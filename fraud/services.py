"""Writes of the fraud ledger (CONVENTIONS 1), the only ones anywhere: a transaction recorded once
with its rules event queued in the outbox, the events made from the outbox, and the one late score
a fail-open row may receive. Nothing else updates or deletes a `Transaction` (fraud/models.py:
append-only)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from accounts.models import Tenant
from core.errors import Conflict
from fraud.engine.transaction import LedgerEntry, Score, decide
from fraud.models import Decision, Transaction, TransactionOutbox
from fraud.selectors import (
    ANSWER_FIELDS,
    TransactionAnswer,
    stored_answer,
    tenant_thresholds,
    transaction_answer,
    transactions_by_key,
)
from rules import services as rules_services
from rules.models import EventSource

# A late score at or above the review threshold raises this event: the client was already
# approved, so a person must look at it (a late `review` too, not only a late `decline`).
LATE_ALERT_DECISIONS = (Decision.REVIEW, Decision.DECLINE)
# Events made per run of `transactions_emit`: as many as the rules engine takes in one call.
EMIT_BATCH = rules_services.MAX_EVENTS_PER_REQUEST


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


def _values(entry: LedgerEntry) -> dict[str, Any]:
    """The row of `entry` as the model's attribute names and values (the others take their
    defaults): what `_row` builds an instance from and the event loop's insert binds directly."""
    tx = entry.tx
    return {
        "tenant_id": entry.tenant_id,
        "transaction_id": tx.transaction_id,
        "user_id": tx.user_id,
        "amount": tx.amount,
        "currency": tx.currency,
        "merchant": tx.merchant,
        "country": tx.country,
        "request_hash": tx.request_hash(),
        "decision": entry.decision,
        "scored": entry.scored,
        "score": entry.score,
        "reasons": [reason.to_json() for reason in entry.reasons],
        "model_version": entry.model_version,
        "history": entry.history.to_json(),
        "created_at": entry.created_at,
    }


def _row(entry: LedgerEntry) -> Transaction:
    return Transaction(**_values(entry))


# (the row, True when this call stored it) or the conflict a replay with other fields is.
LedgerOutcome = tuple[Transaction, bool] | TransactionConflict

# The columns an insert writes: every concrete field but the primary key, by the model's own names.
_INSERT_FIELDS = [field for field in Transaction._meta.concrete_fields if not field.primary_key]
_INSERT_COLUMNS = ", ".join(str(field.column) for field in _INSERT_FIELDS)
_SKIP_STORED = "ON CONFLICT (tenant_id, transaction_id) DO NOTHING RETURNING id, tenant_id, transaction_id"
# PostgreSQL: one statement of constant text whatever the batch's size: a column per array
# parameter (unnest), the rows not stored yet inserted, and their outbox rows with them (a
# data-modifying WITH). Constant text lets psycopg prepare it once per connection and bind the
# arrays on the server; the many-VALUES form had a text per batch size, too long for psycopg's
# query cache, and quoted each value in Python (bench/fraud's profile: an eighth of the ledger's
# work). Built from the model's column names and types; every value is a parameter.
_INSERT_NEW_POSTGRES = (
    f"WITH stored AS (INSERT INTO {Transaction._meta.db_table} ({_INSERT_COLUMNS}) "  # noqa: S608
    "SELECT * FROM unnest({arrays}) "
    f"{_SKIP_STORED}), "
    f"queued AS (INSERT INTO {TransactionOutbox._meta.db_table} (transaction_id) SELECT id FROM stored) "
    "SELECT id, tenant_id, transaction_id FROM stored"
)
# SQLite (embedded mode, >= 3.35 for RETURNING): a VALUES list per batch, the outbox after it.
_INSERT_NEW_SQLITE = f"INSERT INTO {Transaction._meta.db_table} ({_INSERT_COLUMNS}) VALUES {{rows}} {_SKIP_STORED}"  # noqa: S608


def transaction_record(*, entry: LedgerEntry) -> tuple[Transaction, bool]:
    """Stores one decided transaction and queues its rules event: `transactions_record` for one
    entry.

    Returns (row, True) when stored, (the first row, False) for a replay. Raises
    TransactionConflict (409) when the stored row's request hash differs."""
    (outcome,) = transactions_record(entries=[entry])
    if isinstance(outcome, TransactionConflict):
        raise outcome
    return outcome


def transactions_record(*, entries: Sequence[LedgerEntry]) -> list[LedgerOutcome]:
    """Stores decided transactions, each with its row in the outbox (`TransactionOutbox`: its
    rules event, made by `transactions_emit`), in one database transaction (the web process's
    group commit: `fraud.runtime.Batcher`).

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
    existing = transactions_by_key(missing) if missing else {}
    outcomes: list[LedgerOutcome] = []
    for row in rows:
        key = (row.tenant_id, row.transaction_id)
        if key in inserted and inserted[key] is row:
            outcomes.append((row, True))
            continue
        first = inserted.get(key) or existing[key]
        outcomes.append((first, False) if first.request_hash == row.request_hash else TransactionConflict(first))
    return outcomes


def _insert_new(rows: Sequence[Transaction]) -> dict[tuple[int, str], Transaction]:
    """INSERTs `rows` whose (tenant, transaction_id) is new, the first of twins only, each with
    its outbox row; returns the stored ones by key, their `pk` set."""
    firsts: dict[tuple[int, str], Transaction] = {}
    for row in rows:
        firsts.setdefault((row.tenant_id, row.transaction_id), row)
    columns = [[field.get_db_prep_save(getattr(row, field.attname), connection) for row in firsts.values()]
               for field in _INSERT_FIELDS]  # fmt: skip
    insert = _insert_new_postgres if connection.vendor == "postgresql" else _insert_new_sqlite
    returned = insert(columns)
    stored: dict[tuple[int, str], Transaction] = {}
    for pk, tenant_id, transaction_id in returned:
        row = firsts[(tenant_id, transaction_id)]
        row.pk = pk
        row._state.adding = False
        stored[(tenant_id, transaction_id)] = row
    return stored


@functools.cache
def _insert_new_postgres_sql() -> str:
    # %b: the arrays travel in PostgreSQL's binary format (the text format escapes every element
    # with a regular expression). The casts name each column's type.
    return _INSERT_NEW_POSTGRES.format(
        arrays=", ".join(f"%b::{field.db_type(connection)}[]" for field in _INSERT_FIELDS)
    )


def _insert_new_postgres(columns: list[list[Any]]) -> list[tuple[int, int, str]]:
    connection.ensure_connection()
    # A cursor that binds on the server (Django's own binds in Python, quoting every value), on
    # the connection and in the transaction Django opened.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_insert_new_postgres_sql(), columns)
        return cursor.fetchall()


def _insert_new_sqlite(columns: list[list[Any]]) -> list[tuple[int, int, str]]:
    width = len(columns[0])
    row_placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    params = [column[index] for index in range(width) for column in columns]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_NEW_SQLITE.format(rows=", ".join([row_placeholders] * width)), params)
        returned: list[tuple[int, int, str]] = cursor.fetchall()
    TransactionOutbox.objects.bulk_create([TransactionOutbox(transaction_id=pk) for pk, _, _ in returned])
    return returned


# The answer of a row, the conflict a replay with other fields is, or the error that kept one
# entry of a batch out (`transactions_record_async`).
AnswerOutcome = tuple[TransactionAnswer, bool] | TransactionConflict | psycopg.IntegrityError

# JSON columns are bound as jsonb; PostgreSQL's backend takes every other value as the model holds
# it (`DatabaseOperations.adapt_*` are identities there), which a test checks field by field.
_JSON_ATTNAMES = frozenset(field.attname for field in _INSERT_FIELDS if isinstance(field, models.JSONField))
_STORED_COLUMNS = list(Transaction._meta.concrete_fields)
_SELECT_STORED = (
    f"SELECT {', '.join(str(field.column) for field in _STORED_COLUMNS)} "  # noqa: S608
    f"FROM {Transaction._meta.db_table} "
    "WHERE (tenant_id, transaction_id) IN (SELECT * FROM unnest(%b::bigint[], %b::text[]))"
)


async def transactions_record_async(
    *, connection: psycopg.AsyncConnection[Any], entries: Sequence[LedgerEntry]
) -> list[AnswerOutcome]:
    """`transactions_record` on PostgreSQL for an event loop (the web process's ledger,
    `fraud.runtime.PostgresLedger`), on the caller's own connection in autocommit: one statement
    stores the new rows and their outbox rows (the same one as `transactions_record`, atomic by
    itself), bound from the entries without model instances; the rows it skipped are read back
    in one query. Returns the answers rather than the rows (`fraud.selectors.TransactionAnswer`):
    (answer, True) when stored, (the first row's answer, False) for a replay, a
    TransactionConflict (409) when the stored row's request hash differs; one per entry, in order.

    Should the batch fail on another constraint (a tenant deleted since the endpoint loaded it),
    each entry is stored alone, and the one that fails has its psycopg.IntegrityError as its
    outcome: it fails only itself. Raises psycopg.Error for the whole batch otherwise
    (OperationalError: the connection is lost; the caller makes a new one)."""
    if not entries:
        return []
    values = [_values(entry) for entry in entries]
    try:
        inserted = await _insert_new_async(connection, values)
    except psycopg.IntegrityError:
        if len(entries) == 1:
            raise
        outcomes: list[AnswerOutcome] = []
        for entry in entries:
            try:
                outcomes.extend(await transactions_record_async(connection=connection, entries=[entry]))
            except psycopg.IntegrityError as exc:
                outcomes.append(exc)
        return outcomes
    missing = {(row["tenant_id"], row["transaction_id"]) for row in values} - set(inserted)
    existing = await _stored_async(connection, missing) if missing else {}
    results: list[AnswerOutcome] = []
    for row in values:
        key = (row["tenant_id"], row["transaction_id"])
        first = inserted.get(key)
        if first is row:
            results.append((_answer(row), True))
        elif first is not None:  # its twin earlier in this batch was stored
            results.append((_answer(first), False) if first["request_hash"] == row["request_hash"] else
                           TransactionConflict(Transaction(**first)))  # fmt: skip
        else:
            stored = existing[key]
            results.append(
                (transaction_answer(stored), False)
                if stored.request_hash == row["request_hash"]
                else TransactionConflict(stored)
            )
    return results


async def _insert_new_async(
    connection: psycopg.AsyncConnection[Any], values: Sequence[dict[str, Any]]
) -> dict[tuple[int, str], dict[str, Any]]:
    firsts: dict[tuple[int, str], dict[str, Any]] = {}
    for row in values:
        firsts.setdefault((row["tenant_id"], row["transaction_id"]), row)
    rows = list(firsts.values())
    columns: list[list[Any]] = []
    for field in _INSERT_FIELDS:
        name = field.attname
        if name not in rows[0]:  # not an entry's (the late score's fields): the model's default
            default = field.get_default()
            columns.append([Jsonb(default) if name in _JSON_ATTNAMES else default] * len(rows))
        elif name in _JSON_ATTNAMES:
            columns.append([Jsonb(row[name]) for row in rows])
        else:
            columns.append([row[name] for row in rows])
    cursor = await connection.execute(_insert_new_postgres_sql(), columns)
    return {(tenant_id, transaction_id): firsts[(tenant_id, transaction_id)]
            for _, tenant_id, transaction_id in await cursor.fetchall()}  # fmt: skip


async def _stored_async(
    connection: psycopg.AsyncConnection[Any], keys: set[tuple[int, str]]
) -> dict[tuple[int, str], Transaction]:
    tenants, ids = zip(*keys, strict=True)
    cursor = await connection.execute(_SELECT_STORED, [list(tenants), list(ids)])
    names = [field.attname for field in _STORED_COLUMNS]
    rows = [Transaction.from_db("default", names, values) for values in await cursor.fetchall()]
    return {(row.tenant_id, row.transaction_id): row for row in rows}


def _answer(values: dict[str, Any]) -> TransactionAnswer:
    return stored_answer(**{name: values[name] for name in ANSWER_FIELDS})


def transactions_emit(*, limit: int = EMIT_BATCH) -> int:
    """Makes the rules events (`type: transaction`, source `fraud`, one per stored transaction,
    `fraud.services._event_payload`) of up to `limit` transactions waiting in the outbox, oldest
    first, and takes them out of it, in one database transaction: each event is made exactly once,
    also with two workers at it (the rows are claimed `FOR UPDATE SKIP LOCKED`; on SQLite the
    write lock serialises them). The events' evaluation is queued when they commit
    (`rules.services.event_ingest`). Returns the number of events made; 0 when none waited."""
    with transaction.atomic():
        waiting = list(
            TransactionOutbox.objects.select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not waiting:
            return 0
        rows = Transaction.objects.filter(pk__in=waiting).order_by("pk")
        for tenant_id, payloads in _events_by_tenant(rows).items():
            # The tenant's id is all the event rows need: no query for the whole tenant.
            rules_services.event_ingest(tenant=Tenant(pk=tenant_id), payloads=payloads, source=EventSource.FRAUD)
        TransactionOutbox.objects.filter(pk__in=waiting).delete()
    return len(waiting)


def _events_by_tenant(rows: Iterable[Transaction]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.tenant_id, []).append(_event_payload(row))
    return grouped


def transaction_rescore(*, pk: int, score: Score) -> Transaction | None:
    """`transactions_rescore` for one row: the updated row, or None (see there). Raises
    Transaction.DoesNotExist for an unknown pk."""
    (row,) = transactions_rescore(scores=[(pk, score)])
    return row


def transactions_rescore(*, scores: Sequence[tuple[int, Score]]) -> list[Transaction | None]:
    """Gives each fail-open row of `scores` ((pk, score) pairs) its late score, once, in one
    database transaction: `late_score`, `late_reasons`, `late_model_version`, `late_decision` by
    the tenant's thresholds now (`fraud.selectors.tenant_thresholds`,
    `fraud.engine.transaction.decide`) and `rescored_at` now. What the client was answered
    (`decision`, `scored` false, `score` null, the fail-open reason) never changes, so a replay
    still gets the first answer. For each late decision of review or decline, a rules event
    `transaction.review` (the transaction's payload with `late_decision`, `late_score` and
    `late_reasons`) is stored in the same database transaction, the events of one tenant in one
    ingest (one evaluation queued per tenant, not per row: after an outage, one per row kept
    embedded mode's worker busy for half a minute).

    One entry per pair, in order: the updated row, or None when it had its late score already
    (another worker: the conditional UPDATE makes two concurrent re-scores one) or was scored
    when answered. Raises Transaction.DoesNotExist for an unknown pk (nothing is stored)."""
    updated: list[Transaction | None] = []
    reviews: dict[int, tuple[Tenant, list[dict[str, Any]]]] = {}
    with transaction.atomic():
        for pk, score in scores:
            row = _rescore(pk, score)
            updated.append(row)
            if row is not None and row.late_decision in LATE_ALERT_DECISIONS:
                payload = _event_payload(row) | {
                    "type": "transaction.review",
                    "late_decision": row.late_decision,
                    "late_score": row.late_score,
                    "late_reasons": [reason["code"] for reason in row.late_reasons],
                }
                reviews.setdefault(row.tenant_id, (row.tenant, []))[1].append(payload)
        for tenant, payloads in reviews.values():
            rules_services.event_ingest(tenant=tenant, payloads=payloads, source=EventSource.FRAUD)
    return updated


def _rescore(pk: int, score: Score) -> Transaction | None:
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
    return row

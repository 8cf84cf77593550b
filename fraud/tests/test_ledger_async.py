"""The web process's ledger on PostgreSQL (`fraud.services.transactions_record_async`, run by
`fraud.runtime.PostgresRecords` on the event loop): the same rows, answers, replays and conflicts
as the ORM's path, on a connection of its own that survives PostgreSQL dropping it."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.forms.models import model_to_dict
from django.utils import timezone

from accounts.models import Tenant
from core.db import postgres_connect_kwargs
from fraud.engine.transaction import History, LedgerEntry, Reason
from fraud.models import Transaction, TransactionOutbox
from fraud.runtime import PostgresRecords
from fraud.selectors import transaction_answer
from fraud.services import TransactionConflict, transactions_record, transactions_record_async
from fraud.tests.conftest import FAIL_OPEN, tx_in

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the writer's own connection commits
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the event loop's writer is PostgreSQL's"),
]


def _entry(tenant_id: int, transaction_id: str, *, scored: bool = True, **fields: Any) -> LedgerEntry:
    return LedgerEntry(
        tenant_id=tenant_id,
        tx=tx_in(transaction_id, **fields),
        decision="review" if scored else "approve",
        scored=scored,
        score=0.61 if scored else None,
        reasons=[Reason("amount_vs_habit", "amount 14.2x the user's usual", 1.25)] if scored else [FAIL_OPEN],
        model_version="m-1" if scored else "",
        history=History(count_total=3, log_amount_mean=2.5, country_seen=True),
        created_at=timezone.now(),
    )


def _record(entries: list[LedgerEntry]) -> list[Any]:
    async def run() -> list[Any]:
        kwargs = postgres_connect_kwargs(settings.DATABASES["default"], application_name="test-ledger")
        async with await psycopg.AsyncConnection.connect(**kwargs) as writer:
            return await transactions_record_async(connection=writer, entries=entries)

    return asyncio.run(run())


@pytest.mark.parametrize(
    "fields",
    [
        {"scored": True},
        {"scored": False},  # fail-open: no score, its reason
        {"scored": True, "amount": Decimal("1000"), "currency": "JPY", "merchant": "", "country": ""},
    ],
)
def test_a_row_stored_from_the_event_loop_reads_back_as_the_orms_would_store_it(
    tenant_a: Tenant, fields: dict[str, Any]
) -> None:
    loop_entry, orm_entry = _entry(tenant_a.pk, "by-loop", **fields), _entry(tenant_a.pk, "by-orm", **fields)
    orm_entry = LedgerEntry(**{**orm_entry.__dict__, "created_at": loop_entry.created_at})

    [(answer, created)] = _record([loop_entry])
    transactions_record(entries=[orm_entry])

    by_loop, by_orm = (Transaction.objects.get(transaction_id=name) for name in ("by-loop", "by-orm"))
    assert created
    assert answer == transaction_answer(by_loop)
    different = {"id", "transaction_id", "request_hash"}
    assert {k: v for k, v in model_to_dict(by_loop).items() if k not in different} == {
        k: v for k, v in model_to_dict(by_orm).items() if k not in different
    }
    assert set(TransactionOutbox.objects.values_list("pk", flat=True)) == {by_loop.pk, by_orm.pk}


def test_replays_twins_and_conflicts_get_the_first_rows_answer_or_a_conflict(tenant_a: Tenant) -> None:
    (stored,) = transactions_record(entries=[_entry(tenant_a.pk, "old")])
    assert not isinstance(stored, TransactionConflict)
    old_row = stored[0]

    outcomes = _record(
        [
            _entry(tenant_a.pk, "new"),
            _entry(tenant_a.pk, "new"),  # its twin in the same batch
            _entry(tenant_a.pk, "new", amount=Decimal("99")),  # the same id, another body
            _entry(tenant_a.pk, "old"),  # a replay of a stored row
            _entry(tenant_a.pk, "old", user_id="mallory"),
        ]
    )

    new_row = Transaction.objects.get(transaction_id="new")
    assert outcomes[0] == (transaction_answer(new_row), True)
    assert outcomes[1] == (transaction_answer(new_row), False)
    assert isinstance(outcomes[2], TransactionConflict) and outcomes[2].existing.transaction_id == "new"
    assert outcomes[3] == (transaction_answer(old_row), False)
    assert isinstance(outcomes[4], TransactionConflict) and outcomes[4].existing.pk == old_row.pk
    assert Transaction.objects.count() == 2
    assert TransactionOutbox.objects.count() == 2


def test_an_entry_of_a_deleted_tenant_fails_alone(tenant_a: Tenant) -> None:
    missing_tenant = Tenant.objects.order_by("-pk").values_list("pk", flat=True).first() + 1000  # type: ignore[operator]

    outcomes = _record([_entry(tenant_a.pk, "a"), _entry(missing_tenant, "b"), _entry(tenant_a.pk, "c")])

    assert [type(outcome) for outcome in outcomes] == [tuple, psycopg.errors.ForeignKeyViolation, tuple]
    assert sorted(Transaction.objects.values_list("transaction_id", flat=True)) == ["a", "c"]


def test_records_made_together_are_stored_once_each_and_a_dropped_connection_costs_none(tenant_a: Tenant) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        records = PostgresRecords(settings.DATABASES["default"])
        try:
            first = await asyncio.gather(*(records(_entry(tenant_a.pk, f"tx-{n}")) for n in range(150)))
            # PostgreSQL drops the writer's connection (a restart, a proxy's idle cut).
            async with await psycopg.AsyncConnection.connect(
                **postgres_connect_kwargs(settings.DATABASES["default"], application_name="test-killer")
            ) as killer:
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'sentinel-fraud-ledger' AND datname = current_database()"
                )
            then = await asyncio.gather(*(records(_entry(tenant_a.pk, f"later-{n}")) for n in range(20)))
        finally:
            await records.stop()
        return first, then

    first, then = asyncio.run(run())

    assert all(created for _, created in first + then)
    assert [answer["transaction_id"] for answer, _ in first] == [f"tx-{n}" for n in range(150)]
    assert Transaction.objects.count() == 170

"""Reads of the fraud ledger (CONVENTIONS 1): the hot path's replay lookup and answer, the API's
list, the re-score task's queue and the tenant's thresholds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypedDict

from django.db.models import Q, QuerySet

from accounts.models import Tenant
from core.conf import sentinel_settings
from fraud.engine.currencies import MINOR_UNITS
from fraud.models import Transaction


class ReasonJson(TypedDict):
    code: str
    message: str
    contribution: float | None


class TransactionAnswer(TypedDict):
    """SPEC 6's answer to `POST /transaction`, and the first fields of the API's detail."""

    transaction_id: str
    decision: str
    score: float | None
    scored: bool
    reasons: list[ReasonJson]
    model_version: str
    created_at: str


def tenant_thresholds(tenant: Tenant) -> tuple[float, float]:
    """(review, decline) score thresholds of `tenant`: its own fields (`accounts.Tenant.
    fraud_review_threshold`, `fraud_decline_threshold`), each falling back to the setting
    SENTINEL_FRAUD REVIEW_THRESHOLD / DECLINE_THRESHOLD when null."""
    conf = sentinel_settings.fraud
    review = tenant.fraud_review_threshold
    decline = tenant.fraud_decline_threshold
    return (
        float(conf.REVIEW_THRESHOLD) if review is None else review,
        float(conf.DECLINE_THRESHOLD) if decline is None else decline,
    )


def transactions_by_key(keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Transaction]:
    """The stored transactions of `keys` ((tenant pk, transaction_id) pairs) by key, in one query
    on the unique index; keys with no row are absent."""
    match = _keys_match(keys)
    if not match:
        return {}
    return {(row.tenant_id, row.transaction_id): row for row in Transaction.objects.filter(match)}


def transaction_keys_stored(keys: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of `keys` are stored: one index-only query, no row loaded (the replay check every
    `POST /transaction` makes, almost always for a new transaction)."""
    match = _keys_match(keys)
    if not match:
        return set()
    return set(Transaction.objects.filter(match).values_list("tenant_id", "transaction_id"))


def _keys_match(keys: Iterable[tuple[int, str]]) -> Q:
    match = Q()
    for tenant_id, transaction_id in set(keys):
        match |= Q(tenant_id=tenant_id, transaction_id=transaction_id)
    return match


def created_at_text(moment: datetime) -> str:
    """ISO 8601 in UTC with `Z` (`2026-12-01T10:00:00.123456Z`), the text DRF's DateTimeField
    renders with its ISO 8601 format and `TIME_ZONE` UTC (a test holds them equal). Written out
    because DRF's field reads its settings on every call: a fiftieth of the web process's work
    at 300 tx/s, every `POST /transaction` answer having one."""
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# The row's fields an answer is made of (`stored_answer`'s arguments).
ANSWER_FIELDS = ("transaction_id", "decision", "score", "scored", "reasons", "model_version", "created_at")


def transaction_answer(row: Transaction) -> TransactionAnswer:
    """The JSON answer for `row`: what `POST /transaction` returns, first time and on replay."""
    return stored_answer(**{name: getattr(row, name) for name in ANSWER_FIELDS})


def stored_answer(
    *,
    transaction_id: str,
    decision: str,
    score: float | None,
    scored: bool,
    reasons: list[dict[str, Any]],
    model_version: str,
    created_at: datetime,
) -> TransactionAnswer:
    """`transaction_answer` of a row's values (`reasons` as stored: dicts with code, message and
    contribution), for a writer that has them without a model instance."""
    return {
        "transaction_id": transaction_id,
        "decision": decision,
        "score": score,
        "scored": scored,
        "reasons": [
            {"code": reason["code"], "message": reason["message"], "contribution": reason.get("contribution")}
            for reason in reasons
        ],
        "model_version": model_version,
        "created_at": created_at_text(created_at),
    }


def amount_text(amount: Decimal, currency: str) -> str:
    """The amount with the currency's minor units (ISO 4217: 12.50 EUR, 1000 JPY); currencies
    without minor units defined (XAU, ...) keep their significant digits. Exact: no float."""
    exponent = MINOR_UNITS.get(currency)
    if exponent is None:
        return format(amount.normalize(), "f")
    return format(amount.quantize(Decimal(1).scaleb(-exponent)), "f")


def transaction_list(
    *,
    tenant: Tenant | None = None,
    decision: str | None = None,
    late_decision: str | None = None,
    scored: bool | None = None,
    user_id: str | None = None,
    currency: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Transaction]:
    """Transactions newest first (`created_at` then id, descending: the index
    `fraud_tx_tenant_recent`), filtered by whichever argument is not None; `since` inclusive,
    `until` exclusive."""
    rows = Transaction.objects.select_related("tenant").order_by("-created_at", "-id")
    filters: dict[str, Any] = {
        "tenant": tenant,
        "decision": decision,
        "late_decision": late_decision,
        "scored": scored,
        "user_id": user_id,
        "currency": currency,
        "created_at__gte": since,
        "created_at__lt": until,
    }
    return rows.filter(**{name: value for name, value in filters.items() if value is not None})


def transactions_unscored(*, limit: int) -> list[int]:
    """Ids of up to `limit` fail-open rows, oldest first (the partial index `fraud_tx_unscored`)."""
    return list(Transaction.objects.unscored().order_by("created_at", "id").values_list("pk", flat=True)[:limit])

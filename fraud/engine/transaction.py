"""The shapes the fraud parts agree on: a validated transaction, the user's history as it saw it, a
score with its reasons, the fail-open reasons and the decision rule (SPEC 6).

`History` mirrors the `History` message of `fraud/protos/fraud.proto` field for field: the web
process builds it (`fraud.engine.history`), the ledger keeps it as JSON (`Transaction.history`),
the brain turns it into the model's features (`fraud.brain.features`), and the synthetic training
set is made of the same records, so training and serving read one definition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from fraud.engine.currencies import PER_EUR

# Card testing: many charges of at most this much in an hour, in EUR (fraud.engine.currencies):
# 2.00 EUR is 351.36 JPY, not 2 JPY.
SMALL_AMOUNT_EUR: Final = 2.0
# The bound in each quoted currency's major units, computed once: the history's hot path looks it up.
_SMALL_AMOUNTS: Final[dict[str, float]] = {code: SMALL_AMOUNT_EUR * rate for code, rate in PER_EUR.items()}
DECISIONS: Final = ("approve", "review", "decline")


@dataclass(frozen=True)
class TransactionIn:
    """A transaction that passed validation (`fraud.engine.validation`): ids and strings within
    their bounds, `amount` > 0 with at most the currency's minor units, `currency` an ISO 4217
    code in capitals, `country` an ISO 3166-1 alpha-2 code in capitals or ""."""

    transaction_id: str
    user_id: str
    amount: Decimal
    currency: str
    merchant: str = ""
    country: str = ""

    def request_hash(self) -> str:
        """SHA-256 (hex) of the canonical fields: a replay with another amount, currency, user,
        merchant or country hashes differently (409), one with `12.50` for `12.5` does not."""
        canonical = "\x1f".join(
            (
                self.transaction_id,
                self.user_id,
                format(self.amount.normalize(), "f"),
                self.currency,
                self.merchant,
                self.country,
            )
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class History:
    """The user's transactions before this one (this one excluded); see fraud.proto's `History`.

    Amounts in major units, times in Unix epoch ms; every field 0/False for a user never seen.
    """

    count_total: int = 0
    count_10m: int = 0
    count_1h: int = 0
    count_24h: int = 0
    small_count_1h: int = 0
    amount_1h: float = 0.0
    log_amount_mean: float = 0.0
    log_amount_std: float = 0.0
    last_at_ms: int = 0
    country_seen: bool = False
    merchant_seen: bool = False
    countries_24h: int = 0

    def to_json(self) -> dict[str, Any]:
        """Its fields by name (every value a JSON scalar). Not `dataclasses.asdict`, which deep-copies
        each value: the ledger writes one per transaction."""
        return {name: getattr(self, name) for name in _HISTORY_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        """Reads `to_json()`'s dict back; unknown keys are ignored, missing ones take their default."""
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


_HISTORY_FIELDS: Final = tuple(field.name for field in fields(History))


@dataclass(frozen=True)
class Reason:
    """One reason of a decision. For a scored transaction: a feature and its contribution to the
    model's log-odds (SHAP), positive towards fraud. For a fail-open one: why it was not scored
    (`FAIL_OPEN_CODES`), with `contribution` None."""

    code: str
    message: str
    contribution: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "contribution": self.contribution}


@dataclass(frozen=True)
class Score:
    """The brain's answer: `score` the probability of fraud (0..1), `reasons` strongest first."""

    score: float
    reasons: tuple[Reason, ...]
    model_version: str


@dataclass(frozen=True)
class LedgerEntry:
    """A decided transaction for the ledger (`fraud.services.transactions_record`): `score` None
    only when `scored` is False (a fail-open approval, its one reason saying why), `reasons`
    strongest first, `history` what the score was (or will be) computed from, `created_at` when
    the web process received it (UTC)."""

    tenant_id: int
    tx: TransactionIn
    decision: str
    scored: bool
    score: float | None
    reasons: Sequence[Reason]
    model_version: str
    history: History
    created_at: datetime


# Why a transaction was approved unscored (fail-open), as `BrainUnavailable.code`.
FAIL_OPEN_CODES: Final = {
    "brain_timeout": "The fraud brain did not answer within the deadline.",
    "brain_unavailable": "The fraud brain could not be reached.",
    "brain_error": "The fraud brain answered with an error.",
    "breaker_open": "The fraud brain's circuit breaker is open.",
}


class BrainUnavailable(Exception):
    """No score: `code` is one of FAIL_OPEN_CODES, `detail` says more (the gRPC status, ...)."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in FAIL_OPEN_CODES:
            raise ValueError(f"unknown fail-open code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    def reason(self) -> Reason:
        message = FAIL_OPEN_CODES[self.code]
        return Reason(self.code, f"{message} ({self.detail})" if self.detail else message)


def small_amount(currency: str) -> float:
    """The card-testing bound in major units of `currency` (SMALL_AMOUNT_EUR at the ECB rate), or
    0.0 for a currency the ECB does not quote: no amount is > 0 and <= 0, so none counts as small
    (fraud.engine.currencies' fallback; the brain then gives the model no small-charge count)."""
    return _SMALL_AMOUNTS.get(currency, 0.0)


def decide(score: float, review_threshold: float, decline_threshold: float) -> str:
    """SPEC 6: `decline` when score >= decline_threshold, else `review` when score >=
    review_threshold, else `approve` (Marble's ordered thresholds, checked from the strictest)."""
    if score >= decline_threshold:
        return "decline"
    if score >= review_threshold:
        return "review"
    return "approve"

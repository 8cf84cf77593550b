"""The model's features: one vector per transaction, from its own fields and its `History`, and for
each feature a sentence a risk analyst reads as the reason of a score.

Training (`fraud.brain.model.train`) and serving (`fraud.brain.server`) both call
`feature_vector`, so the model sees the same numbers in both.

Absolute amounts (amount_log, amount_1h, first_payment, and the small-charge bound of
small_amounts_1h) are in EUR at the ECB reference rate (fraud.engine.currencies), so 100,000 JPY
reads as the ~570 EUR it is. For a currency without a rate they are missing (NaN, LightGBM's
missing value, which the training set has: `synthetic.NO_RATE`); amount_vs_habit compares ln
amounts within the user's currency and needs no rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from fraud.brain.synthetic import HABIT_MEDIAN_LN
from fraud.engine.currencies import MINOR_UNITS, REFERENCE, to_eur
from fraud.engine.transaction import SMALL_AMOUNT_EUR, History, small_amount

FEATURE_NAMES: Final = (
    "amount_log",
    "amount_vs_habit",
    "first_payment",
    "velocity_10m",
    "velocity_24h",
    "small_amounts_1h",
    "amount_1h",
    "new_country",
    "countries_24h",
    "new_merchant",
    "night",
    "history_size",
    "minutes_since_last",
)
# No hourly count of all transactions: it would share the credit of a burst (velocity_10m) with
# that of card testing (small_amounts_1h), and a reason should name the pattern it saw.
# amount_vs_habit needs a habit: below this many earlier transactions it is 0 (no evidence).
HABIT_MIN_COUNT: Final = 3
# The floor of the habit's ln-amount standard deviation: a user who always paid the same amount
# would otherwise make a cent more a huge z-score.
HABIT_MIN_STD: Final = 0.25
# Night in UTC: the simulated users' day is 07:00-22:59 (fraud.brain.synthetic).
NIGHT_HOURS: Final = range(6)
# What a new user's first payment typically is, in EUR: the simulated users' median (~27 EUR).
TYPICAL_FIRST_EUR: Final = math.exp(HABIT_MEDIAN_LN)
# A first payment this many times the typical one is "far above what new users pay".
FAR_ABOVE: Final = 10.0
# Features that are NaN when there is nothing to say (no rate, not a first payment): a missing
# value is no evidence an analyst can check, so it never becomes a reason's sentence.
SILENT_WHEN_MISSING: Final = frozenset({"amount_log", "first_payment", "small_amounts_1h", "amount_1h"})


@dataclass(frozen=True)
class Facts:
    """What a reason's sentence may quote besides the feature's value."""

    amount: float
    currency: str
    country: str
    merchant: str
    created_at_ms: int
    history: History


def feature_vector(
    *, amount: float, currency: str, country: str, merchant: str, created_at_ms: int, history: History
) -> list[float]:
    """The features of one transaction, in FEATURE_NAMES order.

    `amount` in major units of `currency` (> 0), `created_at_ms` Unix epoch ms, `history` per
    fraud.proto (in `currency`). NaN is LightGBM's missing value: `minutes_since_last` for a
    user's first transaction; `first_payment` (the EUR amount) for any other; and amount_log,
    first_payment, small_amounts_1h and amount_1h when `currency` has no reference rate.
    """
    habit = history.count_total >= HABIT_MIN_COUNT
    z = (math.log(amount) - history.log_amount_mean) / max(history.log_amount_std, HABIT_MIN_STD)
    since = (created_at_ms - history.last_at_ms) / 60_000 if history.last_at_ms else math.nan
    seen_before = history.count_total > 0
    eur, eur_1h = to_eur(amount, currency), to_eur(history.amount_1h, currency)
    known = eur is not None and eur_1h is not None
    return [
        math.log(eur) if eur is not None else math.nan,
        z if habit else 0.0,
        eur if eur is not None and not seen_before else math.nan,
        float(history.count_10m),
        float(history.count_24h),
        float(history.small_count_1h + (amount <= small_amount(currency))) if known else math.nan,
        eur_1h if eur_1h is not None else math.nan,
        float(bool(country) and seen_before and not history.country_seen),
        float(history.countries_24h),
        float(bool(merchant) and seen_before and not history.merchant_seen),
        float(_utc(created_at_ms).hour in NIGHT_HOURS),
        float(history.count_total),
        max(since, 0.0) if not math.isnan(since) else math.nan,
    ]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _plural(count: int, noun: str) -> str:
    """ "1 transaction", "3 transactions" (the nouns used here all take an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _money(amount: float, currency: str) -> str:
    """`amount` with its currency's minor units and thousands separated (ISO 4217: 1.234 BHD,
    1,200 JPY, 9,000.00 EUR)."""
    digits = MINOR_UNITS.get(currency, 2)
    return f"{amount:,.{digits}f} {currency}".rstrip()


def _money_and_eur(amount: float, currency: str) -> str:
    """`_money`, and its EUR value when that is another currency with a rate: "100,000 JPY
    (about 569.22 EUR)"."""
    eur = to_eur(amount, currency) if currency != REFERENCE else None
    return _money(amount, currency) + (f" (about {_money(eur, REFERENCE)})" if eur is not None else "")


def _amount_vs_habit(value: float, facts: Facts) -> str:
    ratio = facts.amount / math.exp(facts.history.log_amount_mean)
    return f"amount {ratio:.1f}x the user's usual"


def _first_payment(value: float, facts: Facts) -> str:
    # The history is per currency: "first" is first in this currency, and the sentence says so.
    first = f"first {facts.currency} payment of this user: {_money_and_eur(facts.amount, facts.currency)}"
    if value < 2 * TYPICAL_FIRST_EUR:
        return first
    how = "far above" if value >= FAR_ABOVE * TYPICAL_FIRST_EUR else "above"
    return f"{first}, {how} what new users pay (typically about {TYPICAL_FIRST_EUR:.0f} EUR)"


def _small_amounts(value: float, facts: Facts) -> str:
    # The feature counts this transaction too: the sentence says so.
    charges = _plural(int(value), "charge")
    bound = _money(small_amount(facts.currency), facts.currency)
    if facts.currency != REFERENCE:
        bound += f" ({SMALL_AMOUNT_EUR:.2f} EUR)"
    return f"{charges} of at most {bound} in the last hour, this one included (card testing)"


def _night(value: float, facts: Facts) -> str:
    return f"at {_utc(facts.created_at_ms):%H:%M} UTC, outside the usual daytime hours"


def _history_size(value: float, facts: Facts) -> str:
    if value == 0:
        return "first transaction of this user"
    return f"only {_plural(int(value), 'earlier transaction')} of this user"


def _minutes_since_last(value: float, facts: Facts) -> str:
    if math.isnan(value):
        return "no earlier transaction of this user"
    if value < 120:
        return f"{value:.1f} minutes after the previous transaction"
    if value < 2880:
        return f"{value / 60:.1f} hours after the previous transaction"
    return f"first transaction in {value / 1440:.1f} days"


# One sentence per feature, from its value (and the transaction's facts); the counts are the
# earlier transactions (fraud.proto's History), this one excluded.
TEMPLATES: Final[dict[str, Callable[[float, Facts], str]]] = {
    "amount_log": lambda v, f: f"amount {_money_and_eur(f.amount, f.currency)}",
    "amount_vs_habit": _amount_vs_habit,
    "first_payment": _first_payment,
    "velocity_10m": lambda v, f: f"{_plural(int(v), 'transaction')} in the 10 minutes before",
    "velocity_24h": lambda v, f: f"{_plural(int(v), 'transaction')} in the 24 hours before",
    "small_amounts_1h": _small_amounts,
    "amount_1h": lambda v, f: f"{_money_and_eur(f.history.amount_1h, f.currency)} spent in the hour before",
    "new_country": lambda v, f: f"first transaction from {f.country}",
    "countries_24h": lambda v, f: f"{int(v)} {'country' if int(v) == 1 else 'countries'} in the last 24 hours",
    "new_merchant": lambda v, f: f"first transaction at merchant {f.merchant}",
    "night": _night,
    "history_size": _history_size,
    "minutes_since_last": _minutes_since_last,
}


def reason_message(feature: str, value: float, facts: Facts) -> str:
    """The analyst's sentence for `feature` at `value`, e.g. "amount 14.2x the user's usual"."""
    return TEMPLATES[feature](value, facts)

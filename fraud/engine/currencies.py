"""Currencies: ISO 4217 minor units (the pinned `iso4217` package) and the euro reference rates
the fraud features compare amounts in (the pinned `CurrencyConverter` package). No Django.

Rates. The model's absolute-amount notions (how big a payment is, what a card tester's "small"
charge is, how big a first payment is) are in one reference currency, EUR, so 100,000 JPY (about
570 EUR) is not read as 100,000 EUR. The rates are the European Central Bank's euro foreign
exchange reference rates of one day, the file `eurofxref.csv` that CurrencyConverter ships
(`RATES_DATE` says which day; 29 currencies and EUR). They are read once, when this module is
imported (~5 ms, no network: there is none at run time); converting is one dict lookup. The
bundled historical file (since 1999) is not loaded: 0.6-1.8 s and ~27 MB per process to add only
currencies the ECB stopped quoting (RUB since 2022-03, and those the euro replaced), whose last
rates are stale. A rate moves a few per cent in a year: nothing here needs better.

Fallback: a currency without an ECB rate (most of ISO 4217's 165: AED, ARS, BHD, CLP, NGN, ...)
has no EUR amount. `to_eur` answers None, the card-testing bound is 0 (no charge counts as small)
and the brain gives the model those features as missing (NaN), a case the training set includes
(`fraud.brain.synthetic.NO_RATE`), so the model judges such a payment by what does not need a
rate: its user's habit in that currency, bursts, countries, merchants, hours.
"""

from __future__ import annotations

from datetime import date
from typing import Final

from currency_converter import SINGLE_DAY_CURRENCY_FILE, CurrencyConverter
from iso4217 import Currency

# Alphabetic code -> digits after the decimal point, for the currencies that define them (EUR 2,
# JPY 0, BHD 3); the metals, SDR, test and "no currency" codes (XAU, XDR, XTS, XXX, ...) have none.
MINOR_UNITS: Final[dict[str, int]] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}

REFERENCE: Final = "EUR"


def _ecb_rates() -> tuple[dict[str, float], date]:
    """{code: units of that currency per 1 EUR} from the ECB's day bundled with CurrencyConverter
    (EUR itself 1.0), and that day."""
    ecb = CurrencyConverter(SINGLE_DAY_CURRENCY_FILE)
    day: date = ecb.bounds[REFERENCE].last_date
    rates = {str(code): float(ecb.convert(1, REFERENCE, code)) for code in sorted(ecb.currencies)}
    return rates, day


# Units of each currency per 1 EUR (JPY ~176, USD ~1.12), for the currencies the ECB quotes.
PER_EUR, RATES_DATE = _ecb_rates()


def to_eur(amount: float, currency: str) -> float | None:
    """`amount` (major units of `currency`) in EUR at the reference rate, or None when the ECB
    quotes no rate for `currency` (the documented fallback: the EUR amount is unknown)."""
    rate = PER_EUR.get(currency)
    return None if rate is None else amount / rate

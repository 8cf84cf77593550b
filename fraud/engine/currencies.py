"""ISO 4217 minor units, from the pinned `iso4217` package: one table for the validation of
amounts, the analyst's sentences and the ledger's display. No Django."""

from __future__ import annotations

from typing import Final

from iso4217 import Currency

# Alphabetic code -> digits after the decimal point, for the currencies that define them (EUR 2,
# JPY 0, BHD 3); the metals, SDR, test and "no currency" codes (XAU, XDR, XTS, XXX, ...) have none.
MINOR_UNITS: Final[dict[str, int]] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}

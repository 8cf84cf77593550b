"""Validation of a `POST /transaction` body (SPEC 6, SPEC 7): JSON in, a `TransactionIn` out, or
`InvalidTransaction` with every field's problems at once.

The choices, where the spec leaves them open:

* `amount`: a JSON number or a decimal string ("12.50"; digits, one optional point, no sign,
  exponent or spaces). Refused: booleans, NaN/Infinity, <= 0, >= 10^12 (the ledger's
  `AMOUNT_MAX_DIGITS`), and more decimals than the currency's minor units once trailing zeros
  are dropped (ISO 4217's exponent, from the pinned `iso4217` package: "12.50" JPY is refused,
  "1200.00" JPY is 1200).
* `currency`: three ASCII letters, any case (stored in capitals), known to ISO 4217 and having a
  minor unit. Codes without one (the metals XAU/XAG/XPD/XPT, the bond units XBA..XBD, SDR XDR,
  XSU, XUA, test XTS and "no currency" XXX) are refused: they are not card money, and the ledger
  could not tell how many decimals to allow.
* `country`: optional, an ISO 3166-1 alpha-2 code assigned to a country (the pinned `pycountry`
  package's list), any case (stored in capitals), plus XK (Kosovo: user-assigned in ISO 3166, but
  what card networks send). "ZZ" is refused: a typo must not become a "new country".
* `transaction_id`: 1..64 characters of `A-Z a-z 0-9 _ - . :`, not starting with a dot: what
  payment systems use for ids (`ch_3N…`, UUIDs, `order:42`), and safe in the URL of the ledger's
  detail (`/api/v1/transactions/{transaction_id}`). `user_id`: 1..64 characters, `merchant`:
  optional, 0..64; in both, no control characters (C0, DEL, C1: they end up in logs and the
  admin) and no leading or trailing white space (" u1" and "u1" would be two users).
* Unknown fields are refused (400, named in the details): a misspelt `merchnat` would otherwise
  be silently scored without its merchant. `tenant` is known: only a staff caller may use it
  (the endpoint decides).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import pycountry

from fraud.engine.currencies import MINOR_UNITS
from fraud.engine.transaction import TransactionIn

__all__ = ["AMOUNT_LIMIT", "FIELDS", "InvalidTransaction", "parse_transaction"]

ID_MAX: Final = 64
MERCHANT_MAX: Final = 64
TENANT_REF_MAX: Final = 64
# Exclusive: the ledger's DecimalField holds 16 digits with 4 decimals, so 12 before the point.
AMOUNT_LIMIT: Final = Decimal(10) ** 12
FIELDS: Final = frozenset({"transaction_id", "amount", "currency", "user_id", "merchant", "country", "tenant"})

_DECIMAL_TEXT = re.compile(r"[0-9]{1,13}(\.[0-9]{1,20})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRANSACTION_ID = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]*")
_ALPHA2 = re.compile(r"[A-Za-z]{2}")
_ALPHA3 = re.compile(r"[A-Za-z]{3}")
# ISO 3166-1 alpha-2 codes, and XK (Kosovo, user-assigned, used by card networks).
_COUNTRIES: Final = frozenset({country.alpha_2 for country in pycountry.countries} | {"XK"})


class InvalidTransaction(ValueError):
    """The body is not a valid transaction. `details` maps each bad field to its problems (a list of
    sentences), the shape DRF gives a 400 too; `details["body"]` when the body is not an object."""

    def __init__(self, details: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(problems)}" for name, problems in details.items()))
        self.details = details


def parse_transaction(data: Any) -> tuple[TransactionIn, str]:
    """`data` (the decoded JSON body; decode it with `parse_float=Decimal` so no digit is lost) →
    (the transaction, the `tenant` reference it names or ""). Raises `InvalidTransaction`."""
    if not isinstance(data, dict):
        raise InvalidTransaction({"body": ["Expected a JSON object."]})
    problems: dict[str, list[str]] = {}

    def check(name: str, value: Any) -> Any:
        try:
            return value()
        except ValueError as exc:
            problems.setdefault(name, []).append(str(exc))
            return None

    for name in sorted(set(data) - FIELDS):
        problems.setdefault(name[:64], []).append("Unknown field.")
    transaction_id = check("transaction_id", lambda: _transaction_id(data))
    user_id = check("user_id", lambda: _text(data, "user_id", required=True, limit=ID_MAX))
    merchant = check("merchant", lambda: _text(data, "merchant", required=False, limit=MERCHANT_MAX))
    country = check("country", lambda: _country(data.get("country")))
    tenant = check("tenant", lambda: _text(data, "tenant", required=False, limit=TENANT_REF_MAX))
    currency = check("currency", lambda: _currency(data.get("currency")))
    amount = check("amount", lambda: _amount(data.get("amount"), currency))
    if problems:
        raise InvalidTransaction(problems)
    transaction = TransactionIn(
        transaction_id=transaction_id,
        user_id=user_id,
        amount=amount,
        currency=currency,
        merchant=merchant,
        country=country,
    )
    return transaction, tenant


def _text(data: dict[str, Any], name: str, *, required: bool, limit: int) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ValueError("This field is required.")
        return ""
    if not isinstance(value, str):
        raise ValueError("Expected a string.")
    if required and not value:
        raise ValueError("This field may not be blank.")
    if len(value) > limit:
        raise ValueError(f"At most {limit} characters.")
    if _CONTROL.search(value):
        raise ValueError("Control characters are not allowed.")
    if value != value.strip():
        raise ValueError("Leading or trailing white space is not allowed.")
    return value


def _transaction_id(data: dict[str, Any]) -> str:
    value = _text(data, "transaction_id", required=True, limit=ID_MAX)
    if not _TRANSACTION_ID.fullmatch(value):
        raise ValueError("Letters, digits and _ - . : only, not starting with a dot.")
    return value


def _country(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _ALPHA2.fullmatch(value):
        raise ValueError("Expected an ISO 3166-1 alpha-2 code (two letters).")
    code = value.upper()
    if code not in _COUNTRIES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code.")
    return code


def _currency(value: Any) -> str:
    if value is None:
        raise ValueError("This field is required.")
    if not isinstance(value, str) or not _ALPHA3.fullmatch(value):
        raise ValueError("Expected an ISO 4217 alphabetic code (three letters).")
    code = value.upper()
    if code not in MINOR_UNITS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency with minor units.")
    return code


def _amount(value: Any, currency: str | None) -> Decimal:
    if value is None:
        raise ValueError("This field is required.")
    # bool is an int in Python: `true` must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValueError("Expected a number or a decimal string.")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError('Expected a decimal string such as "12.50".')
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError("Expected a number.") from None
    if not amount.is_finite():
        raise ValueError("Expected a finite number.")
    if amount <= 0:
        raise ValueError("Must be greater than 0.")
    if amount >= AMOUNT_LIMIT:
        raise ValueError(f"Must be less than {AMOUNT_LIMIT:f}.")
    if currency is not None:
        exponent = amount.normalize().as_tuple().exponent
        decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if decimals > MINOR_UNITS[currency]:
            raise ValueError(f"At most {MINOR_UNITS[currency]} decimal places in {currency}.")
    return amount

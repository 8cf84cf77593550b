"""Validation of a POST /transaction body (fraud.engine.validation): what passes, normalised, and
every refusal with the field it names. No Django, no I/O."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from fraud.engine.validation import InvalidTransaction, parse_transaction

GOOD: dict[str, Any] = {"transaction_id": "tx-1", "amount": "12.50", "currency": "EUR", "user_id": "u-1"}


def body(**changes: Any) -> dict[str, Any]:
    data = {**GOOD, **changes}
    return {key: value for key, value in data.items() if value is not ...}


def refused(data: Any) -> dict[str, list[str]]:
    with pytest.raises(InvalidTransaction) as caught:
        parse_transaction(data)
    return caught.value.details


def test_a_minimal_transaction_passes_with_defaults() -> None:
    tx, tenant = parse_transaction(body())
    assert (tx.transaction_id, tx.user_id, tx.amount, tx.currency, tx.merchant, tx.country) == (
        "tx-1", "u-1", Decimal("12.50"), "EUR", "", "",
    )  # fmt: skip
    assert tenant == ""


def test_case_is_normalised_and_optional_fields_kept() -> None:
    tx, tenant = parse_transaction(body(currency="eur", country="fr", merchant="m-42", tenant="acme"))
    assert (tx.currency, tx.country, tx.merchant, tenant) == ("EUR", "FR", "m-42", "acme")


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (json.loads("12.5", parse_float=Decimal), "EUR"),
        (7, "EUR"),
        ("1200.00", "JPY"),  # trailing zeros are not decimals
        ("0.0001", "CLF"),  # four minor units
        ("999999999999.99", "USD"),
    ],
)
def test_amounts_within_the_currency_minor_units_pass(amount: Any, currency: str) -> None:
    tx, _ = parse_transaction(body(amount=amount, currency=currency))
    assert tx.amount == Decimal(str(amount))


@pytest.mark.parametrize(
    "amount",
    [True, False, 0, "0", -1, "-1", "1e3", " 1", "1,5", "", [], {}, None, float("nan"), float("inf"),
     Decimal("NaN"), "1000000000000", 10**12, "12.345"],
)  # fmt: skip
def test_bad_amounts_are_refused_on_the_amount_field(amount: Any) -> None:
    assert "amount" in refused(body(amount=amount))


def test_more_decimals_than_the_currency_has_are_refused() -> None:
    assert refused(body(amount="12.5", currency="JPY")) == {"amount": ["At most 0 decimal places in JPY."]}


@pytest.mark.parametrize("currency", ["EU", "EURO", "XXX", "XAU", "ABC", 978, "", None, "E1R"])
def test_bad_currencies_are_refused(currency: Any) -> None:
    assert "currency" in refused(body(currency=currency))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("transaction_id", ""),
        ("transaction_id", "x" * 65),
        ("transaction_id", "tx\n1"),
        ("transaction_id", 12),
        ("transaction_id", ...),
        # Unsafe in the ledger's detail URL, or blank in disguise
        ("transaction_id", "  "),
        ("transaction_id", "a/b?c"),
        ("transaction_id", ".."),
        ("transaction_id", "tx 1"),
        ("transaction_id", "tx%2F1"),
        ("user_id", ""),
        ("user_id", "   "),
        ("user_id", " u-1"),
        ("user_id", "u\x00"),
        ("user_id", ...),
        ("merchant", "m" * 65),
        ("merchant", "m\x7f"),
        ("country", "FRA"),
        ("country", "F1"),
        ("country", "ZZ"),
        ("country", "QQ"),
        ("country", 33),
        ("tenant", "t" * 65),
    ],
)
def test_bounded_ids_and_strings(field: str, value: Any) -> None:
    assert field in refused(body(**{field: value}))


@pytest.mark.parametrize("transaction_id", ["ch_3N1xYz", "0d9c7a52-3b1e-4c4e-9f0a-1b2c3d4e5f60", "order:42.1", "_x"])
def test_ids_payment_systems_use_pass(transaction_id: str) -> None:
    assert parse_transaction(body(transaction_id=transaction_id))[0].transaction_id == transaction_id


@pytest.mark.parametrize("country", ["fr", "BR", "xk"])
def test_assigned_countries_and_kosovo_pass(country: str) -> None:
    assert parse_transaction(body(country=country))[0].country == country.upper()


def test_ids_of_exactly_64_characters_pass() -> None:
    tx, _ = parse_transaction(body(transaction_id="x" * 64, user_id="é" * 64, merchant="m" * 64))
    assert len(tx.transaction_id) == len(tx.user_id) == len(tx.merchant) == 64


def test_unknown_fields_are_refused_and_every_problem_reported_at_once() -> None:
    details = refused(body(amount=-1, currency="???", merchnat="shop"))
    assert set(details) == {"amount", "currency", "merchnat"}
    assert details["merchnat"] == ["Unknown field."]


@pytest.mark.parametrize("data", [[], "x", 1, None])
def test_a_body_that_is_not_an_object_is_refused(data: Any) -> None:
    assert refused(data) == {"body": ["Expected a JSON object."]}

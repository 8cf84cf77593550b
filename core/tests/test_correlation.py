"""The ids the gateway makes for every request: their shape, whatever the random bits are."""

from __future__ import annotations

import re

import pytest

from core.correlation import accept_correlation_id, new_correlation_id, random_hex


@pytest.mark.parametrize("bits", [64, 128])
def test_random_hex_is_always_bits_over_four_lower_case_hex_digits(bits: int) -> None:
    # One id in 16 starts with a zero nibble: 5,000 of them include many, whose padding must stay.
    ids = [random_hex(bits) for _ in range(5_000)]

    assert all(re.fullmatch(f"[0-9a-f]{{{bits // 4}}}", value) for value in ids)
    assert any(value.startswith("0") for value in ids)
    assert len(set(ids)) == len(ids)


def test_a_valid_client_id_is_kept_and_anything_else_replaced_by_a_new_one() -> None:
    assert accept_correlation_id("abc-123._X") == "abc-123._X"
    for refused in (None, "", "a b", "x" * 129, "é"):
        assert re.fullmatch("[0-9a-f]{32}", accept_correlation_id(refused))
    assert new_correlation_id() != new_correlation_id()

"""Correlation ids and traceparent handling of the proxy."""

from __future__ import annotations

import pytest

from core.correlation import accept_correlation_id as correlation_id
from gateway.engine.tracing import continue_trace

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_correlation_id_is_kept() -> None:
    assert correlation_id("order-42_retry.1") == "order-42_retry.1"


@pytest.mark.parametrize("bad", [None, "", "a b", "x" * 129, "<script>", "ünï"])
def test_an_invalid_correlation_id_is_replaced(bad: str | None) -> None:
    replaced = correlation_id(bad)

    assert replaced != bad
    assert len(replaced) == 32


def test_a_valid_traceparent_is_continued_under_a_new_span() -> None:
    context = continue_trace(VALID)

    assert context.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert context.parent_id == "00f067aa0ba902b7"
    assert context.span_id != context.parent_id
    assert context.traceparent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert context.traceparent.endswith("-01")


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        VALID.upper(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        VALID + "-" + "x" * 10_000,
    ],
)
def test_an_invalid_or_huge_traceparent_starts_a_new_trace(bad: str) -> None:
    context = continue_trace(bad)

    assert context.parent_id is None
    assert context.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len(context.traceparent) == 55

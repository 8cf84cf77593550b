"""Fixtures of the rules tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache


def _forget_receiver_pauses() -> None:
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("rules:receiver-pause:*")  # only these keys, never the whole Redis DB
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _no_receiver_pauses() -> Iterator[None]:
    """A receiver's pause (rules.services.receiver_pause) lives in the cache, which outlives a
    test (and, on Redis, the test session); a sink on a reused port must not inherit one."""
    _forget_receiver_pauses()
    yield
    _forget_receiver_pauses()

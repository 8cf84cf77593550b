"""Waiting on a condition with a deadline, never on the clock alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(AssertionError):
    """The condition did not hold within the deadline (an AssertionError: a test failure)."""


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls ``predicate`` every ``interval`` s until it returns something truthy, and returns it.

    Raises ``WaitTimeout`` naming ``what`` (and the last exception the predicate raised) after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - the condition may raise until it holds
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{detail}")

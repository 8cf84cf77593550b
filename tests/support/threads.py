"""Running a function in several threads at the same moment, for tests of concurrent writers.

Each thread waits on one barrier, so they all call `function` together (the race the test is
about), closes its own database connection when done (Django opens one per thread), and the
test gets every result and every exception back instead of losing them in a thread::

    results = at_once(lambda: transaction_record(entry=entry), times=2)
    assert sorted(created for _, created in results) == [False, True]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def at_once(function: Callable[[], T], *, times: int = 2, timeout: float = 60) -> list[T]:
    """`function()` in `times` threads started together; their results, in the order they ended.

    Raises the first exception a thread raised, and AssertionError when one has not ended
    `timeout` s after the start."""
    start = threading.Barrier(times)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=10)
            results.append(function())
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread still runs after {timeout} s"
    if errors:
        raise errors[0]
    return results

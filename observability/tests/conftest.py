"""Fixtures of the observability tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def request_log_empty(request: pytest.FixtureRequest) -> None:
    """Starts each database test of this app on an empty request log.

    Web processes started by tests elsewhere in the run write real log rows (their writer commits
    outside any test transaction), so without this a test counting or paging rows would see
    theirs."""
    uses_db = "django_db" in request.keywords or {"db", "transactional_db"} & set(request.fixturenames)
    if not uses_db:
        return
    from observability.models import RequestLog

    request.getfixturevalue("transactional_db" if "transactional_db" in request.fixturenames else "db")
    RequestLog.objects.all().delete()

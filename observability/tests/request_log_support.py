"""What the request-log tests share: records as the proxy makes them, and the rows they became."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from django.db import connection

from gateway.engine.proxy import RequestRecord
from observability import services
from observability.models import RequestLog


def make_record(n: int = 0, **fields: Any) -> RequestRecord:
    """A forwarded GET's record, correlation id ``req-<n>``; `fields` override any field."""
    values: dict[str, Any] = {
        "correlation_id": f"req-{n}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "route": "/api/",
        "tenant_key": "ip:203.0.113.9",
        "tier": "standard",
        "method": "GET",
        "path": f"/api/items/{n}",
        "status": 200,
        "decision": "forwarded",
        "latency_ms": 1.5,
        "upstream": "http://127.0.0.1:8080",
        "upstream_latency_ms": 1.0,
        "client_ip": "203.0.113.9",
        "user_agent": "pytest",
        "arrived_at": time.time(),
        "route_id": 7,
    }
    values.update(fields)
    return RequestRecord(**values)


def stored_correlation_ids() -> Counter[str]:
    """How many rows the log holds per correlation id."""
    return Counter(RequestLog.objects.values_list("correlation_id", flat=True))


def postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def no_partitions_left(transactional_db: None) -> Iterator[None]:
    """Drops every day partition (PostgreSQL) before and after the test: the test database's flush
    empties tables but leaves partitions, which would change what the next test sees."""
    if postgres():
        services.request_log_partitions_drop(before=date.max)
    yield
    if postgres():
        services.request_log_partitions_drop(before=date.max)

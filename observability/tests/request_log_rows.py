"""Request-log rows for tests of the reading side. Logs are written by the pipeline, never through
an API or a service, so tests write them as the writer would: in one bulk insert."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from observability.models import Decision, RequestLog

_serial = itertools.count(1)


def log_row(*, time: datetime | None = None, tenant_uuid: uuid.UUID | None = None, **fields: Any) -> RequestLog:
    """An unsaved row: a forwarded `GET /orders/<n>` answered 200 by default, at ``time`` (now)."""
    n = next(_serial)
    values: dict[str, Any] = {
        "time": time or timezone.now(),
        "correlation_id": f"req-{n:06d}",
        "tenant_uuid": tenant_uuid,
        "tenant_key": str(tenant_uuid) if tenant_uuid else "ip:198.51.100.7",
        "tier": "standard",
        "method": "GET",
        "path": f"/orders/{n}",
        "route": "/orders/",
        "status": 200,
        "decision": Decision.FORWARDED,
        "latency_ms": 12.5,
        "client_ip": "198.51.100.7",
    }
    values.update(fields)
    return RequestLog(**values)


def log_rows(rows: list[RequestLog]) -> list[RequestLog]:
    """``rows`` stored in one bulk insert, as the writer stores a batch; returned with their ids."""
    return RequestLog.objects.bulk_create(rows)  # both backends return the ids (RETURNING)


def minutes_ago(minutes: float) -> datetime:
    return timezone.now() - timedelta(minutes=minutes)

"""Request-log rows for the insight tests, written as the request-log writer would write them.

The analysis tests (test_insight_analysis.py) call the engine in-process on rows they place at
chosen times, with `traffic_write` and `flood_send`; the acceptance test (test_insight_e2e.py)
floods a real web process instead, whose writer writes the rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.utils import timezone

from observability.models import Decision, RequestLog


def traffic_write(
    *,
    count: int,
    client_ip: str = "198.51.100.7",
    status: int = 200,
    decision: str = Decision.FORWARDED,
    at: datetime | None = None,
    spread_seconds: float = 1.0,
    route: str = "/api/orders",
    route_id: int | None = 1,
    tenant_uuid: uuid.UUID | str | None = None,
    latency_ms: float = 20.0,
    upstream: str = "http://127.0.0.1:9/",
    breaker_transition: str = "",
) -> None:
    """`count` rows ending at `at` (now) spread over `spread_seconds`, in one bulk insert."""
    end = at or timezone.now()
    step = spread_seconds / max(count, 1)
    RequestLog.objects.bulk_create(
        [
            RequestLog(
                time=end - timedelta(seconds=step * (count - n)),
                correlation_id=uuid.uuid4().hex,
                tenant_uuid=tenant_uuid,
                tenant_key=str(tenant_uuid) if tenant_uuid else f"ip:{client_ip}",
                route_id=route_id,
                route=route,
                method="GET",
                path=f"{route}/{n}",
                status=status,
                decision=decision,
                latency_ms=latency_ms,
                upstream=upstream,
                client_ip=client_ip,
                breaker_transition=breaker_transition,
            )
            for n in range(count)
        ],
        batch_size=1000,
    )


def flood_send(*, client_ip: str, count: int, limited: int = 0) -> None:
    """A flood from `client_ip`: `count` requests in the last second, the last `limited` of
    them answered 429."""
    traffic_write(count=count - limited, client_ip=client_ip)
    if limited:
        traffic_write(count=limited, client_ip=client_ip, status=429, decision=Decision.LIMITED)

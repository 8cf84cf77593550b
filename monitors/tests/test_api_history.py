"""`GET /api/v1/monitors/{id}/history` and `/uptime`: keyset pages newest first, filters by time
and outcome, refusals of what the API does not read, and the tenant wall."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from monitors.models import CheckOutcome, CheckResult, Monitor, MonitorRollup, RollupPeriod

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def monitor(tenant_a: Tenant) -> Monitor:
    return Monitor.objects.create(tenant=tenant_a, name="shop", target="http://93.184.215.14/")


def results(monitor: Monitor, count: int, *, same_time: bool = False) -> list[CheckResult]:
    """`count` results a minute apart (or all at T0), every third one down."""
    rows = [
        CheckResult(
            monitor=monitor,
            checked_at=T0 if same_time else T0 + timedelta(minutes=index),
            outcome=CheckOutcome.DOWN if index % 3 == 0 else CheckOutcome.UP,
            latency_ms=float(index),
            reason="status 500, expected 200-299" if index % 3 == 0 else "",
        )
        for index in range(count)
    ]
    return CheckResult.objects.bulk_create(rows)


def walk(client: APIClient, url: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.content
        seen.extend(response.json()["results"])
        next_url = response.json()["next"]
    return seen


def test_pages_walk_every_result_once_newest_first(api: Api, alice: User, monitor: Monitor) -> None:
    stored = results(monitor, 7)

    seen = walk(api(alice), f"/api/v1/monitors/{monitor.pk}/history?limit=3")

    assert [item["id"] for item in seen] == [row.pk for row in reversed(stored)]
    assert seen[0]["reason"] == "status 500, expected 200-299"
    assert {"checked_at", "outcome", "status_code", "latency_ms", "reason", "failed_condition"} <= set(seen[0])


def test_results_sharing_a_time_are_neither_skipped_nor_repeated(api: Api, alice: User, monitor: Monitor) -> None:
    stored = results(monitor, 5, same_time=True)

    seen = walk(api(alice), f"/api/v1/monitors/{monitor.pk}/history?limit=2")

    assert [item["id"] for item in seen] == sorted((row.pk for row in stored), reverse=True)


def test_filters_by_time_range_and_outcome(api: Api, alice: User, monitor: Monitor) -> None:
    results(monitor, 10)
    since, until = "2026-11-30T12:02:00Z", "2026-11-30T13:07:00%2B01:00"  # 12:02 to 12:07 UTC

    seen = walk(api(alice), f"/api/v1/monitors/{monitor.pk}/history?since={since}&until={until}&outcome=down")

    assert [item["latency_ms"] for item in seen] == [6.0, 3.0]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("outcome=sideways", "outcome"),
        ("since=yesterday", "since"),
        ("until=2026-02-30T00:00:00Z", "until"),
        ("since=2026-11-30T13:00:00Z&until=2026-11-30T12:00:00Z", "until"),
        ("cursor=not-a-cursor", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("outcom=down", "outcom"),
    ],
)
def test_a_bad_or_unknown_parameter_is_a_400_naming_it(
    api: Api, alice: User, monitor: Monitor, query: str, field: str
) -> None:
    response = api(alice).get(f"/api/v1/monitors/{monitor.pk}/history?{query}")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]


def test_uptime_answers_the_three_periods(api: Api, alice: User, monitor: Monitor) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    MonitorRollup.objects.create(monitor=monitor, period=RollupPeriod.HOUR, bucket=hour, checks=4, failures=1)

    response = api(alice).get(f"/api/v1/monitors/{monitor.pk}/uptime")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"24h", "7d", "30d"}
    assert body["24h"]["uptime_percent"] == pytest.approx(75.0)
    assert set(body["30d"]["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(body["30d"]["incidents"]) == {"count", "total_seconds", "longest_seconds", "ongoing"}


def test_another_tenants_history_and_uptime_answer_404(api: Api, mallory: User, monitor: Monitor) -> None:
    results(monitor, 2)

    for suffix in ("history", "uptime"):
        response = api(mallory).get(f"/api/v1/monitors/{monitor.pk}/{suffix}")
        assert response.status_code == 404
        assert "results" not in response.json()

"""The dashboard's monitors tile: counts by state, the down ones listed, tenants as walls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant
from core.tiles import DashboardScope, dashboard_tiles
from monitors.models import MonitorState
from monitors.tests.status_support import monitor
from monitors.tiles import MonitorsTile

pytestmark = pytest.mark.django_db


def figures(data: dict) -> dict[str, object]:  # type: ignore[type-arg]
    return {figure["label"]: figure["value"] for figure in data["figures"]}


def test_the_tile_is_on_the_dashboard() -> None:
    assert "monitors" in [tile.key for tile in dashboard_tiles()]


def test_a_tenant_sees_its_own_counts_and_down_monitors_longest_down_first(tenant_a: Tenant, tenant_b: Tenant) -> None:
    now = timezone.now()
    monitor(tenant_a, "API", state=MonitorState.UP)
    monitor(tenant_a, "Cron", state=MonitorState.PAUSED, enabled=False)
    monitor(tenant_a, "DB", state=MonitorState.MAINTENANCE)
    monitor(
        tenant_a,
        "Payments",
        state=MonitorState.DOWN,
        state_changed_at=now - timedelta(hours=2),
        last_reason="timeout after 10.0 s",
    )
    monitor(tenant_a, "Search", state=MonitorState.DOWN, state_changed_at=now - timedelta(minutes=5))
    monitor(tenant_b, "Evil down", state=MonitorState.DOWN, last_reason="connection refused")

    data = MonitorsTile()(DashboardScope(str(tenant_a.uuid), tenant_a.slug))

    assert figures(data) == {"up": 1, "down": 2, "paused": 1, "maintenance": 1}
    assert data["status"] == "critical"
    assert [row["label"] for row in data["rows"]] == ["Payments", "Search"]
    assert data["rows"][0]["value"] == "down 2\xa0hours · timeout after 10.0 s"
    assert data["rows"][1]["value"] == "down 5\xa0minutes · no reason recorded"


def test_the_fleet_sees_every_tenant_named(tenant_a: Tenant, tenant_b: Tenant) -> None:
    monitor(tenant_a, "API", state=MonitorState.UP)
    monitor(tenant_b, "Evil down", state=MonitorState.DOWN, last_reason="connection refused")

    data = MonitorsTile()(DashboardScope())

    assert figures(data)["up"] == 1 and figures(data)["down"] == 1
    assert [row["label"] for row in data["rows"]] == ["evil · Evil down"]


def test_nothing_down_is_ok_and_no_monitor_is_idle(tenant_a: Tenant, tenant_b: Tenant) -> None:
    monitor(tenant_b, "Evil down", state=MonitorState.DOWN)
    empty = MonitorsTile()(DashboardScope(str(tenant_a.uuid), tenant_a.slug))
    monitor(tenant_a, "API", state=MonitorState.UP)
    calm = MonitorsTile()(DashboardScope(str(tenant_a.uuid), tenant_a.slug))

    assert empty["status"] == "idle" and empty["rows"] == [] and empty["empty"].startswith("No monitor yet")
    assert calm["status"] == "ok" and calm["rows"] == [] and calm["empty"] == "Nothing is down."

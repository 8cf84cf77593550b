"""`monitors.services` as every door (API, admin, commands, tasks) calls it: what it refuses,
what a change does to the version and the schedule, and the maintenance windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from accounts.models import Tenant
from core.errors import Conflict, DomainError
from monitors import services
from monitors.models import MaintenanceWindow, Monitor, MonitorState
from rules.models import NotificationChannel
from tests.support.rows import row

pytestmark = pytest.mark.django_db

PUBLIC_URL = "http://93.184.215.14/health"


def make(tenant: Tenant, **fields: Any) -> Monitor:
    return services.monitor_create(tenant=tenant, **{"name": "shop", "target": PUBLIC_URL, **fields})


def refusal(call: Any, **fields: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(**fields)
    return caught.value


def test_name_and_target_are_required(tenant_a: Tenant) -> None:
    assert "target" in refusal(services.monitor_create, tenant=tenant_a, name="x").details
    assert "name" in refusal(services.monitor_create, tenant=tenant_a, target=PUBLIC_URL).details


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"interval_seconds": True}, "interval_seconds"),
        ({"interval_seconds": 10.5}, "interval_seconds"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds"),
        ({"headers": ["Accept"]}, "headers"),
        ({"headers": {"X-A": 1}}, "headers"),
        ({"headers": {"X-A": "a\x00b"}}, "headers"),
        ({"expected_status": "200"}, "expected_status"),
        ({"expected_status": [True]}, "expected_status"),
        ({"name": "a\x00b"}, "name"),
        ({"target": "http://h\x00st/"}, "target"),
        ({"channels": "1"}, "channels"),
        ({"channels": [True]}, "channels"),
        ({"colour": "red"}, "colour"),
        ({"state": "up"}, "state"),
        ({"version": 7}, "version"),
    ],
)
def test_values_no_serializer_would_pass_are_refused_too(tenant_a: Tenant, fields: dict[str, Any], field: str) -> None:
    error = refusal(make, tenant=tenant_a, **fields)

    assert error.code == "validation_error"
    assert field in error.details
    assert not Monitor.objects.exists()


def test_a_taken_name_is_a_conflict_and_another_tenant_may_use_it(tenant_a: Tenant, tenant_b: Tenant) -> None:
    make(tenant_a)

    with pytest.raises(Conflict):
        make(tenant_a)
    assert make(tenant_b).tenant == tenant_b


def test_a_refused_update_changes_nothing(tenant_a: Tenant) -> None:
    monitor = make(tenant_a)
    before = row(monitor)

    refusal(services.monitor_update, monitor=Monitor.objects.get(), name="renamed", interval_seconds=5)

    assert row(monitor) == before


def test_a_timeout_must_stay_under_the_interval_whichever_changes(tenant_a: Tenant) -> None:
    monitor = make(tenant_a, interval_seconds=30, timeout_seconds=20)

    error = refusal(services.monitor_update, monitor=monitor, interval_seconds=20)

    assert "timeout_seconds" in error.details


def test_the_egress_refusal_is_logged_and_counted_as_a_monitor_save(
    tenant_a: Tenant, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.EGRESS_ALLOW_LOOPBACK = False
    labels = {"kind": "monitor", "stage": "save"}
    before = REGISTRY.get_sample_value("sentinel_egress_refusals_total", labels) or 0.0

    error = refusal(make, tenant=tenant_a, kind="tcp", target="localhost:5432")

    assert error.code == "egress_denied"
    assert REGISTRY.get_sample_value("sentinel_egress_refusals_total", labels) == before + 1
    assert any(getattr(record, "kind", None) == "monitor" for record in caplog.records)


@pytest.mark.parametrize(("interval", "timeout"), [(10, 8.0), (12, 9.6), (13, 10.0), (60, 10.0)])
def test_without_a_timeout_a_short_interval_gets_80_percent_of_it(
    tenant_a: Tenant, interval: int, timeout: float
) -> None:
    assert make(tenant_a, interval_seconds=interval).timeout_seconds == timeout


def test_a_timeout_given_with_the_interval_is_kept_or_refused_as_given(tenant_a: Tenant) -> None:
    assert make(tenant_a, interval_seconds=10, timeout_seconds=2).timeout_seconds == 2
    with pytest.raises(DomainError) as refused:
        make(tenant_a, name="late", interval_seconds=10, timeout_seconds=10)
    assert refused.value.details == {"timeout_seconds": ["Must be shorter than interval_seconds."]}


def test_a_paused_monitor_is_created_paused(tenant_a: Tenant) -> None:
    assert make(tenant_a, enabled=False).state == MonitorState.PAUSED


def test_resume_clears_the_streaks_and_makes_a_check_due(tenant_a: Tenant) -> None:
    monitor = make(tenant_a)
    Monitor.objects.filter(pk=monitor.pk).update(
        consecutive_failures=2, consecutive_successes=0, next_due_at=timezone.now() + timedelta(hours=1)
    )
    monitor.refresh_from_db()

    services.monitor_pause(monitor=monitor)
    services.monitor_resume(monitor=monitor)

    stored = Monitor.objects.get()
    assert (stored.state, stored.enabled, stored.consecutive_failures) == (MonitorState.UNKNOWN, True, 0)
    assert stored.next_due_at <= timezone.now()


def test_check_now_on_many_skips_paused_ones(tenant_a: Tenant) -> None:
    running, paused = make(tenant_a, name="a"), make(tenant_a, name="b", enabled=False)
    later = timezone.now() + timedelta(hours=1)
    Monitor.objects.update(next_due_at=later)

    assert services.monitors_check_now(monitors=[running, paused]) == 1
    assert Monitor.objects.get(pk=paused.pk).next_due_at == later
    assert Monitor.objects.get(pk=running.pk).next_due_at <= timezone.now()


def test_channels_are_set_and_replaced(tenant_a: Tenant) -> None:
    one = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", name="one", target=PUBLIC_URL)
    two = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", name="two", target=PUBLIC_URL)
    monitor = make(tenant_a, channels=[one.pk, two])

    services.monitor_update(monitor=monitor, channels=[two.pk])

    assert list(Monitor.objects.get().channels.all()) == [two]
    assert Monitor.objects.get().version == 1  # who is told is not what is checked


def test_a_dependency_chain_refuses_the_cycle_at_any_depth(tenant_a: Tenant) -> None:
    top = make(tenant_a, name="top")
    middle = make(tenant_a, name="middle", depends_on=top.pk)
    bottom = make(tenant_a, name="bottom", depends_on=middle)

    error = refusal(services.monitor_update, monitor=top, depends_on=bottom.pk)

    assert "depends_on" in error.details
    assert Monitor.objects.get(pk=top.pk).depends_on_id is None


# --- maintenance windows -----------------------------------------------------------------------------

STARTS = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def test_a_window_for_the_whole_tenant_or_one_monitor(tenant_a: Tenant) -> None:
    monitor = make(tenant_a)

    whole = services.maintenance_window_create(tenant=tenant_a, name="all", starts_at=STARTS, duration_minutes=30)
    one = services.maintenance_window_create(
        tenant=tenant_a, name="one", starts_at=STARTS, duration_minutes=30, monitor=monitor.pk, recurrence="weekly"
    )

    assert (whole.monitor_id, one.monitor_id, one.recurrence) == (None, monitor.pk, "weekly")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"starts_at": datetime(2026, 12, 1, 22, 0)}, "starts_at"),  # naive
        ({"starts_at": "2026-12-01"}, "starts_at"),
        ({"duration_minutes": 31 * 24 * 60 + 1}, "duration_minutes"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"monitor": 999_999}, "monitor"),
        ({"tenant_id": 3}, "tenant_id"),
    ],
)
def test_bad_windows_are_refused(tenant_a: Tenant, fields: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"name": "w", "starts_at": STARTS, "duration_minutes": 30}

    error = refusal(services.maintenance_window_create, tenant=tenant_a, **{**base, **fields})

    assert field in error.details
    assert not MaintenanceWindow.objects.exists()


def test_a_window_update_is_checked_and_delete_removes_it(tenant_a: Tenant) -> None:
    window = services.maintenance_window_create(tenant=tenant_a, name="w", starts_at=STARTS, duration_minutes=30)

    refusal(services.maintenance_window_update, window=window, recurrence="weekly", duration_minutes=8 * 24 * 60)
    services.maintenance_window_update(window=MaintenanceWindow.objects.get(), duration_minutes=45)
    assert MaintenanceWindow.objects.get().duration_minutes == 45

    services.maintenance_window_delete(window=window)
    assert not MaintenanceWindow.objects.exists()


def test_an_update_does_not_overwrite_the_run_state_written_since_the_monitor_was_read(tenant_a: Tenant) -> None:
    stale = make(tenant_a)
    # The state machine flips it while an operator has the edit form open.
    Monitor.objects.filter(pk=stale.pk).update(state=MonitorState.DOWN, consecutive_failures=3)

    services.monitor_update(monitor=stale, name="renamed", keyword="OK")

    stored = Monitor.objects.get()
    assert (stored.name, stored.keyword, stored.version) == ("renamed", "OK", 2)
    assert (stored.state, stored.consecutive_failures) == (MonitorState.DOWN, 3)

"""The monitors admin: pages render with their columns, filters and inlines, writes go through
the services (a refusal shows on the form and stores nothing), and the actions work."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from accounts.models import Tenant, User
from accounts.tests.htmlforms import form_data
from monitors import services
from monitors.models import (
    CheckOutcome,
    CheckResult,
    Flip,
    MaintenanceWindow,
    Monitor,
    MonitorRollup,
    MonitorState,
    RollupPeriod,
)

pytestmark = pytest.mark.django_db

URL = "/admin/monitors/monitor/"


@pytest.fixture
def monitor(tenant_a: Tenant) -> Monitor:
    monitor = services.monitor_create(tenant=tenant_a, name="shop", target="http://93.184.215.14/")
    now = timezone.now()
    Monitor.objects.filter(pk=monitor.pk).update(
        state=MonitorState.DOWN, last_checked_at=now, last_outcome="down", last_reason="status 500, expected 200-299"
    )
    for minute in range(25):
        CheckResult.objects.create(
            monitor=monitor, checked_at=now - timedelta(minutes=minute), outcome=CheckOutcome.DOWN, latency_ms=12.0
        )
    MonitorRollup.objects.create(
        monitor=monitor, period=RollupPeriod.HOUR, bucket=now - timedelta(minutes=5), checks=8, failures=2
    )
    Flip.objects.create(tenant=tenant_a, monitor=monitor, old_state="up", new_state="down", reason="3 failures")
    return monitor


def messages_of(response: object) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]


def test_the_list_shows_state_last_check_and_uptime_in_a_query_for_the_page(
    staff_client: Client, monitor: Monitor, tenant_a: Tenant, django_assert_max_num_queries: object
) -> None:
    for index in range(5):
        services.monitor_create(tenant=tenant_a, name=f"m{index}", target=f"http://93.184.215.14/{index}")

    with django_assert_max_num_queries(12):  # type: ignore[operator]
        response = staff_client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert "75.00 %" in page
    assert "status 500, expected 200-299" in page
    assert "#cf222e" in page  # down, in red


@pytest.mark.parametrize(
    "query",
    [
        {"state__exact": "down"},
        {"kind__exact": "http"},
        {"enabled__exact": "1"},
        {"published__exact": "0"},
        {"q": "93.184"},
        {"q": "shop"},
    ],
)
def test_filters_and_search_render(staff_client: Client, monitor: Monitor, query: dict[str, str]) -> None:
    response = staff_client.get(URL, query)

    assert response.status_code == 200
    assert [item.pk for item in response.context["cl"].result_list] == [monitor.pk]


def test_the_tenant_filter_renders(staff_client: Client, monitor: Monitor, tenant_a: Tenant) -> None:
    response = staff_client.get(URL, {"tenant__id__exact": tenant_a.pk})

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1


def test_the_change_page_shows_the_latest_results_and_flips_read_only(staff_client: Client, monitor: Monitor) -> None:
    response = staff_client.get(f"{URL}{monitor.pk}/change/")

    assert response.status_code == 200
    formsets = {formset.formset.prefix: formset for formset in response.context["inline_admin_formsets"]}
    assert len(formsets["results"].formset.forms) == 20
    assert len(formsets["flips"].formset.forms) == 1
    assert not formsets["results"].has_change_permission


def test_a_monitor_made_in_the_admin_is_made_by_the_service(staff_client: Client, tenant_a: Tenant) -> None:
    data = form_data(staff_client.get(f"{URL}add/").content.decode(), "monitor_form")
    data.update({"tenant": [str(tenant_a.pk)], "name": ["api"], "target": ["http://93.184.215.14/api"]})

    response = staff_client.post(f"{URL}add/", data)

    assert response.status_code == 302, response.content.decode()[:3000]
    created = Monitor.objects.get(name="api")
    assert (created.interval_seconds, created.failure_threshold, created.headers) == (60, 3, {})


def test_a_refused_condition_shows_on_the_form_and_changes_nothing(staff_client: Client, monitor: Monitor) -> None:
    url = f"{URL}{monitor.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "monitor_form")
    data["conditions"] = ["status =="]

    response = staff_client.post(url, data)

    assert response.status_code == 200
    assert "Syntax error" in response.content.decode()
    assert Monitor.objects.get().conditions == ""


def test_a_change_in_the_admin_goes_through_the_service(staff_client: Client, monitor: Monitor) -> None:
    url = f"{URL}{monitor.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "monitor_form")
    data["keyword"] = ["OK"]

    response = staff_client.post(url, data)

    assert response.status_code == 302
    stored = Monitor.objects.get()
    assert (stored.keyword, stored.version) == ("OK", 2)


def test_the_actions_pause_resume_and_check_now(staff_client: Client, monitor: Monitor) -> None:
    def act(action: str) -> list[str]:
        response = staff_client.post(URL, {"action": action, "_selected_action": [monitor.pk]}, follow=True)
        assert response.status_code == 200
        return messages_of(response)

    assert act("pause") == ["1 monitor(s) paused."]
    assert Monitor.objects.get().state == MonitorState.PAUSED
    assert "1 paused one(s) skipped" in act("check_now")[0]

    act("resume")
    assert (Monitor.objects.get().state, Monitor.objects.get().enabled) == (MonitorState.UNKNOWN, True)
    Monitor.objects.update(next_due_at=timezone.now() + timedelta(hours=1))
    act("check_now")
    assert Monitor.objects.get().next_due_at <= timezone.now()


def test_delete_goes_through_the_service(staff_client: Client, monitor: Monitor) -> None:
    response = staff_client.post(f"{URL}{monitor.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Monitor.objects.exists()


def test_maintenance_windows_and_check_results_pages_render(
    staff_client: Client, monitor: Monitor, tenant_a: Tenant
) -> None:
    window = services.maintenance_window_create(
        tenant=tenant_a, name="patch night", starts_at=timezone.now(), duration_minutes=60
    )
    result = CheckResult.objects.first()
    assert result is not None

    for url in (
        "/admin/monitors/maintenancewindow/",
        f"/admin/monitors/maintenancewindow/{window.pk}/change/",
        "/admin/monitors/maintenancewindow/add/",
        "/admin/monitors/checkresult/",
        f"/admin/monitors/checkresult/{result.pk}/change/",
        "/admin/monitors/checkresult/?outcome__exact=down",
    ):
        assert staff_client.get(url).status_code == 200, url
    assert staff_client.get("/admin/monitors/checkresult/add/").status_code == 403


def test_the_flips_page_shows_each_change_and_whether_its_alert_went_out(
    staff_client: Client, monitor: Monitor
) -> None:
    Flip.objects.create(tenant=monitor.tenant, monitor=monitor, old_state="up", new_state="down", reason="status 503")
    processed = Flip.objects.create(
        tenant=monitor.tenant, monitor=monitor, old_state="down", new_state="up", processed_at=timezone.now()
    )

    page = staff_client.get("/admin/monitors/flip/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "up → down" in text and "down → up" in text and "status 503" in text and "pending" in text
    for url in ("/admin/monitors/flip/?held=yes", "/admin/monitors/flip/?new_state__exact=down"):
        assert staff_client.get(url).status_code == 200, url
    assert staff_client.get(f"/admin/monitors/flip/{processed.pk}/change/").status_code == 200
    assert staff_client.get("/admin/monitors/flip/add/").status_code == 403


def test_a_maintenance_window_made_in_the_admin_is_checked_by_the_service(
    staff_client: Client, tenant_a: Tenant
) -> None:
    url = "/admin/monitors/maintenancewindow/add/"
    data = form_data(staff_client.get(url).content.decode(), "maintenancewindow_form")
    data.update(
        {
            "tenant": [str(tenant_a.pk)],
            "name": ["weekly"],
            "starts_at_0": ["2026-12-01"],
            "starts_at_1": ["22:00:00"],
            "duration_minutes": ["60"],
            "recurrence": ["weekly"],
            "timezone": ["Mars/Olympus"],
        }
    )

    refused = staff_client.post(url, data)
    assert refused.status_code == 200
    assert "IANA" in refused.content.decode()
    assert not MaintenanceWindow.objects.exists()

    data["timezone"] = ["Europe/Paris"]
    assert staff_client.post(url, data).status_code == 302
    assert MaintenanceWindow.objects.get().timezone == "Europe/Paris"


def test_the_admin_is_for_staff_only(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    assert client.get(URL).status_code == 302


def test_a_loopback_target_is_refused_on_the_admin_form_under_the_production_policy(
    staff_client: Client, tenant_a: Tenant, settings: object
) -> None:
    settings.EGRESS_ALLOW_LOOPBACK = False  # type: ignore[attr-defined]
    data = form_data(staff_client.get(f"{URL}add/").content.decode(), "monitor_form")
    data.update({"tenant": [str(tenant_a.pk)], "name": ["inside"], "target": ["http://127.0.0.1:6379/"]})

    response = staff_client.post(f"{URL}add/", data)

    assert response.status_code == 200
    assert "EGRESS_ALLOWED_NETWORKS" in response.content.decode()
    assert not Monitor.objects.exists()

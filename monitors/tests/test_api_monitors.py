"""`/api/v1/monitors`: CRUD through the services, every bad input of the issue's acceptance as a
400 with the SPEC 7 error, the egress policy at save, pause / resume / check-now, roles and API-key
scopes, and the tenant wall on every path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Scope, Tenant, User
from monitors.models import Monitor, MonitorState
from rules.models import NotificationChannel
from tests.support.rows import row

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
# pytest-django's `settings` fixture (its class is private).
SettingsWrapper = Any

# A public address (example.com's): the egress policy passes it without DNS.
PUBLIC_URL = "http://93.184.215.14/health"


def create_monitor(client: APIClient, **overrides: Any) -> dict[str, Any]:
    body = {"name": "shop", "target": PUBLIC_URL, **overrides}
    response = client.post("/api/v1/monitors", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


def test_an_admin_creates_a_monitor_with_the_spec_fields_and_gatus_defaults(
    api: Api, alice: User, tenant_a: Tenant
) -> None:
    created = create_monitor(api(alice), expected_status=["200-299", 301], headers={"Accept": "application/json"})

    spec_fields = {
        "name", "kind", "target", "method", "headers", "body", "expected_status", "keyword", "keyword_absent",
        "max_latency_ms", "conditions", "interval_seconds", "timeout_seconds", "failure_threshold",
        "success_threshold", "verify_tls", "enabled", "channels", "state", "last_checked_at",
    }  # fmt: skip
    assert spec_fields <= set(created)
    assert created["tenant"] == tenant_a.pk
    assert (created["kind"], created["method"], created["interval_seconds"]) == ("http", "GET", 60)
    assert (created["failure_threshold"], created["success_threshold"]) == (3, 2)
    assert created["expected_status"] == ["200-299", "301"]
    assert (created["state"], created["last_checked_at"], created["version"]) == ("unknown", None, 1)
    monitor = Monitor.objects.get(pk=created["id"])
    assert monitor.headers == {"Accept": "application/json"}
    assert monitor.next_due_at <= timezone.now()


def test_a_tcp_monitor_and_its_channels(api: Api, alice: User, tenant_a: Tenant) -> None:
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", name="ops", target=PUBLIC_URL)

    created = create_monitor(api(alice), kind="tcp", target="93.184.215.14:5432", channels=[channel.pk])

    assert created["channels"] == [channel.pk]
    assert list(Monitor.objects.get(pk=created["id"]).channels.all()) == [channel]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"interval_seconds": 9}, "interval_seconds"),
        ({"kind": "icmp"}, "kind"),
        ({"target": "not a url"}, "target"),
        ({"target": "ftp://93.184.215.14/"}, "target"),
        ({"target": "http://"}, "target"),
        ({"kind": "tcp", "target": "93.184.215.14"}, "target"),
        ({"kind": "tcp", "target": "db.example.com"}, "target"),
        ({"method": "BREW"}, "method"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 61}, "timeout_seconds"),
        ({"interval_seconds": 10, "timeout_seconds": 10}, "timeout_seconds"),
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"success_threshold": 101}, "success_threshold"),
        ({"headers": {"X-Evil": "a\r\nHost: b"}}, "headers"),
        ({"headers": {"bad name": "x"}}, "headers"),
        ({"headers": {f"X-{i}": "v" for i in range(51)}}, "headers"),
        ({"body": "x" * (64 * 1024 + 1)}, "body"),
        ({"body": "é" * (32 * 1024 + 1)}, "body"),
        ({"expected_status": ["abc"]}, "expected_status"),
        ({"expected_status": ["299-200"]}, "expected_status"),
        ({"keyword": "k" * 501}, "keyword"),
        ({"reminder_interval_seconds": 59}, "reminder_interval_seconds"),
        ({"cert_expiry_warning_days": 0}, "cert_expiry_warning_days"),
        ({"cert_expiry_warning_days": 366}, "cert_expiry_warning_days"),
        ({"name": ""}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"channels": [2**31]}, "channels"),
        ({"depends_on": 0}, "depends_on"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(
    api: Api, alice: User, overrides: dict[str, Any], field: str
) -> None:
    response = api(alice).post("/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL, **overrides}, format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in error["details"], error
    assert not Monitor.objects.exists()


def test_a_condition_with_a_syntax_error_is_a_400_with_its_line_and_column(api: Api, alice: User) -> None:
    conditions = "status == 200 and\n  response_time <"

    response = api(alice).post(
        "/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL, "conditions": conditions}, format="json"
    )

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_condition"
    assert error["message"].startswith("Syntax error")
    assert (error["details"]["conditions"]["line"], error["details"]["conditions"]["column"]) == (2, 18)
    assert not Monitor.objects.exists()


def test_a_window_in_a_condition_is_refused_with_its_position(api: Api, alice: User) -> None:
    response = api(alice).post(
        "/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL, "conditions": "count(1m) > 3"}, format="json"
    )

    assert response.status_code == 400
    assert {"line", "column"} <= set(error_of(response)["details"]["conditions"])


@pytest.mark.parametrize(
    ("conditions", "position", "words"),
    [
        # A typo reads a field that is always missing: the monitor would be down for good.
        ("status == 200 and respone_time < 300", (1, 19), "unknown name `respone_time`"),
        ("foo == 1", (1, 1), "unknown name `foo`"),
        ('status == 200 and (body.ok == true or header.x == "1")', (1, 39), "unknown name `header`"),
        # Values, not tests: read as truthiness they would say nothing a user meant.
        ("status", (1, 1), "`status` is a value, not a test"),
        ("status == 200 and response_time + 1", (1, 19), "`response_time + 1` is a value, not a test"),
        ("not body.items", (1, 5), "`body.items` is a value, not a test"),
    ],
)
def test_a_condition_reading_an_unknown_name_or_testing_nothing_is_a_400_with_its_position(
    api: Api, alice: User, conditions: str, position: tuple[int, int], words: str
) -> None:
    response = api(alice).post(
        "/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL, "conditions": conditions}, format="json"
    )

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_condition"
    assert words in error["message"]
    assert (error["details"]["conditions"]["line"], error["details"]["conditions"]["column"]) == position
    assert not Monitor.objects.exists()


def test_a_valid_condition_is_stored_as_written(api: Api, alice: User) -> None:
    conditions = 'status == 200 and response_time < 300 and body.status == "UP"'

    created = create_monitor(api(alice), conditions=conditions)

    assert Monitor.objects.get(pk=created["id"]).conditions == conditions


@pytest.fixture
def production_policy(settings: SettingsWrapper) -> SettingsWrapper:
    """The policy of production mode: loopback refused, no network allowed."""
    settings.EGRESS_ALLOW_LOOPBACK = False
    settings.EGRESS_ALLOWED_NETWORKS = []
    return settings


@pytest.mark.parametrize(
    ("kind", "target", "address"),
    [
        ("http", "http://127.0.0.1:8080/health", "127.0.0.1"),
        ("http", "http://[::1]/", "::1"),
        ("http", "http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("tcp", "10.0.0.5:5432", "10.0.0.5"),
        ("tcp", "127.0.0.1:6379", "127.0.0.1"),
    ],
)
def test_a_loopback_or_private_target_from_a_tenant_is_a_400_egress_denied(
    api: Api, alice: User, production_policy: SettingsWrapper, kind: str, target: str, address: str
) -> None:
    response = api(alice).post("/api/v1/monitors", {"name": "in", "kind": kind, "target": target}, format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "egress_denied"
    assert error["details"]["address"] == address
    assert "EGRESS_ALLOWED_NETWORKS" in error["message"]
    assert not Monitor.objects.exists()


def test_changing_the_target_is_checked_too_and_an_allowed_network_lets_it_in(
    api: Api, alice: User, production_policy: SettingsWrapper
) -> None:
    created = create_monitor(api(alice))

    refused = api(alice).patch(f"/api/v1/monitors/{created['id']}", {"target": "http://10.1.2.3/"}, format="json")
    assert (refused.status_code, error_of(refused)["code"]) == (400, "egress_denied")
    assert Monitor.objects.get().target == PUBLIC_URL

    production_policy.EGRESS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    allowed = api(alice).patch(f"/api/v1/monitors/{created['id']}", {"target": "http://10.1.2.3/"}, format="json")
    assert allowed.status_code == 200, allowed.content


def test_a_taken_name_is_a_409(api: Api, alice: User) -> None:
    create_monitor(api(alice))

    response = api(alice).post("/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL}, format="json")

    assert response.status_code == 409
    assert error_of(response)["code"] == "conflict"
    assert Monitor.objects.count() == 1


def test_another_tenants_channel_is_refused(api: Api, alice: User, tenant_b: Tenant) -> None:
    theirs = NotificationChannel.objects.create(tenant=tenant_b, kind="webhook", name="x", target=PUBLIC_URL)

    response = api(alice).post(
        "/api/v1/monitors", {"name": "shop", "target": PUBLIC_URL, "channels": [theirs.pk]}, format="json"
    )

    assert response.status_code == 400
    assert "channels" in error_of(response)["details"]
    assert not Monitor.objects.exists()


def test_depends_on_another_tenants_monitor_or_a_cycle_is_refused(api: Api, alice: User, mallory: User) -> None:
    theirs = create_monitor(api(mallory), name="theirs")
    parent = create_monitor(api(alice), name="parent")
    child = create_monitor(api(alice), name="child", depends_on=parent["id"])
    assert child["depends_on"] == parent["id"]

    foreign = api(alice).post(
        "/api/v1/monitors", {"name": "x", "target": PUBLIC_URL, "depends_on": theirs["id"]}, format="json"
    )
    cycle = api(alice).patch(f"/api/v1/monitors/{parent['id']}", {"depends_on": child["id"]}, format="json")
    itself = api(alice).patch(f"/api/v1/monitors/{parent['id']}", {"depends_on": parent["id"]}, format="json")

    for response in (foreign, cycle, itself):
        assert response.status_code == 400, response.content
        assert "depends_on" in error_of(response)["details"]
    assert Monitor.objects.get(pk=parent["id"]).depends_on_id is None


def test_changing_what_a_check_does_bumps_the_version_and_other_fields_do_not(api: Api, alice: User) -> None:
    created = create_monitor(api(alice))
    url = f"/api/v1/monitors/{created['id']}"

    renamed = api(alice).patch(url, {"name": "shop front", "failure_threshold": 5}, format="json").json()
    assert renamed["version"] == 1
    same_value = api(alice).patch(url, {"target": PUBLIC_URL}, format="json").json()
    assert same_value["version"] == 1
    changed = api(alice).patch(url, {"keyword": "OK"}, format="json").json()
    assert changed["version"] == 2
    put = api(alice).put(url, {"name": "shop", "target": PUBLIC_URL, "conditions": "status == 200"}, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["version"] == 3


def test_a_shorter_interval_brings_the_next_check_closer(api: Api, alice: User) -> None:
    created = create_monitor(api(alice), interval_seconds=3600)
    Monitor.objects.filter(pk=created["id"]).update(next_due_at=timezone.now() + timedelta(hours=1))

    api(alice).patch(f"/api/v1/monitors/{created['id']}", {"interval_seconds": 30}, format="json")

    assert Monitor.objects.get().next_due_at <= timezone.now() + timedelta(seconds=30)


def test_pause_resume_and_check_now(api: Api, alice: User) -> None:
    created = create_monitor(api(alice))
    url = f"/api/v1/monitors/{created['id']}"
    Monitor.objects.filter(pk=created["id"]).update(
        state=MonitorState.DOWN, consecutive_failures=4, next_due_at=timezone.now() + timedelta(minutes=5)
    )

    paused = api(alice).post(f"{url}/pause")
    assert paused.status_code == 200, paused.content
    assert (paused.json()["state"], paused.json()["enabled"]) == ("paused", False)

    refused = api(alice).post(f"{url}/check-now")
    assert (refused.status_code, error_of(refused)["code"]) == (409, "monitor_paused")

    resumed = api(alice).post(f"{url}/resume")
    assert (resumed.json()["state"], resumed.json()["enabled"]) == ("unknown", True)
    monitor = Monitor.objects.get()
    assert (monitor.consecutive_failures, monitor.consecutive_successes) == (0, 0)
    assert monitor.next_due_at <= timezone.now()

    Monitor.objects.filter(pk=monitor.pk).update(next_due_at=timezone.now() + timedelta(minutes=5))
    checked = api(alice).post(f"{url}/check-now")
    assert checked.status_code == 202, checked.content
    assert Monitor.objects.get().next_due_at <= timezone.now()


def test_enabled_false_in_an_update_pauses(api: Api, alice: User) -> None:
    created = create_monitor(api(alice))

    api(alice).patch(f"/api/v1/monitors/{created['id']}", {"enabled": False}, format="json")

    assert Monitor.objects.get().state == MonitorState.PAUSED


def test_a_member_reads_and_checks_now_but_does_not_change(api: Api, alice: User, bob: User) -> None:
    created = create_monitor(api(alice))
    url = f"/api/v1/monitors/{created['id']}"

    assert api(bob).get(url).status_code == 200
    assert api(bob).post(f"{url}/check-now").status_code == 202
    assert api(bob).patch(url, {"name": "mine"}, format="json").status_code == 403
    assert api(bob).post(f"{url}/pause").status_code == 403
    assert api(bob).delete(url).status_code == 403
    assert api(bob).post("/api/v1/monitors", {"name": "b", "target": PUBLIC_URL}, format="json").status_code == 403


def test_api_keys_need_api_write_to_change(api: Api, alice: User, tenant_a: Tenant) -> None:
    created = create_monitor(api(alice))
    _, read_key = account_services.api_key_create(tenant=tenant_a, name="r", scopes=[Scope.API_READ.value])
    _, write_key = account_services.api_key_create(tenant=tenant_a, name="w", scopes=[Scope.API_WRITE.value])
    url = f"/api/v1/monitors/{created['id']}"

    assert api(api_key=read_key).get(url).status_code == 200
    assert api(api_key=read_key).post(f"{url}/pause").status_code == 403
    assert api(api_key=write_key).post(f"{url}/pause").status_code == 200
    assert api().get(url).status_code == 401


def test_delete(api: Api, alice: User) -> None:
    created = create_monitor(api(alice))

    assert api(alice).delete(f"/api/v1/monitors/{created['id']}").status_code == 204
    assert not Monitor.objects.exists()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("put", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/pause"),
        ("post", "/resume"),
        ("post", "/check-now"),
        ("get", "/history"),
        ("get", "/uptime"),
    ],
)
def test_another_tenants_monitor_answers_404_on_every_path(
    api: Api, alice: User, mallory: User, method: str, suffix: str
) -> None:
    theirs = create_monitor(api(mallory), name="theirs")
    before = row(Monitor.objects.get(pk=theirs["id"]))

    response = getattr(api(alice), method)(
        f"/api/v1/monitors/{theirs['id']}{suffix}", {"name": "mine", "target": PUBLIC_URL}, format="json"
    )

    assert response.status_code == 404, response.content
    assert error_of(response)["code"] == "not_found"
    assert row(Monitor.objects.get(pk=theirs["id"])) == before


def test_the_list_shows_only_the_callers_tenant_and_staff_see_all(
    api: Api, alice: User, mallory: User, staff: User
) -> None:
    create_monitor(api(alice), name="ours")
    create_monitor(api(mallory), name="theirs")

    listed = api(alice).get("/api/v1/monitors").json()["results"]
    everyone = api(staff).get("/api/v1/monitors").json()["results"]

    assert [item["name"] for item in listed] == ["ours"]
    assert sorted(item["name"] for item in everyone) == ["ours", "theirs"]


def test_staff_create_in_a_named_tenant_and_are_held_to_the_egress_policy(
    api: Api, staff: User, tenant_a: Tenant, production_policy: SettingsWrapper
) -> None:
    response = api(staff).post(
        "/api/v1/monitors", {"name": "x", "target": "http://127.0.0.1/", "tenant": tenant_a.slug}, format="json"
    )

    assert (response.status_code, error_of(response)["code"]) == (400, "egress_denied")


def test_the_list_reads_its_channels_in_one_query_not_one_a_monitor(
    api: Api, alice: User, tenant_a: Tenant, django_assert_max_num_queries: Any
) -> None:
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", name="ops", target=PUBLIC_URL)
    client = api(alice)
    for index in range(10):
        create_monitor(client, name=f"m{index}", channels=[channel.pk])

    # The caller, the count, the page (tenant joined), the page's channels: never one a monitor.
    with django_assert_max_num_queries(6):
        listed = client.get("/api/v1/monitors").json()["results"]

    assert len(listed) == 10
    assert all(item["channels"] == [channel.pk] for item in listed)

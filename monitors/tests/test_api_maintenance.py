"""`/api/v1/maintenance-windows`: CRUD through the services, validation, and the tenant wall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from monitors.models import MaintenanceWindow, Monitor

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
URL = "/api/v1/maintenance-windows"


def window_body(**overrides: Any) -> dict[str, Any]:
    return {"name": "patch night", "starts_at": "2026-12-01T22:00:00Z", "duration_minutes": 60, **overrides}


@pytest.fixture
def monitor(tenant_a: Tenant) -> Monitor:
    return Monitor.objects.create(tenant=tenant_a, name="shop", target="http://93.184.215.14/")


def test_an_admin_creates_changes_and_deletes_a_window(api: Api, alice: User, monitor: Monitor) -> None:
    created = api(alice).post(
        URL, window_body(recurrence="weekly", timezone="Europe/Paris", monitor=monitor.pk), format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["recurrence"], body["timezone"], body["monitor"]) == ("weekly", "Europe/Paris", monitor.pk)

    changed = api(alice).patch(f"{URL}/{body['id']}", {"duration_minutes": 90, "monitor": None}, format="json")
    assert changed.status_code == 200, changed.content
    window = MaintenanceWindow.objects.get()
    assert (window.duration_minutes, window.monitor_id) == (90, None)

    assert api(alice).delete(f"{URL}/{body['id']}").status_code == 204
    assert not MaintenanceWindow.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"recurrence": "weekly", "duration_minutes": 7 * 24 * 60 + 1}, "duration_minutes"),
        ({"recurrence": "daily"}, "recurrence"),
        ({"starts_at": "soon"}, "starts_at"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api: Api, alice: User, overrides: dict[str, Any], field: str) -> None:
    response = api(alice).post(URL, window_body(**overrides), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert not MaintenanceWindow.objects.exists()


def test_a_window_for_another_tenants_monitor_is_refused(api: Api, mallory: User, monitor: Monitor) -> None:
    response = api(mallory).post(URL, window_body(monitor=monitor.pk), format="json")

    assert response.status_code == 400
    assert "monitor" in response.json()["error"]["details"]


def test_another_tenants_window_answers_404_and_is_not_listed(api: Api, alice: User, mallory: User, bob: User) -> None:
    created = api(alice).post(URL, window_body(), format="json").json()

    assert api(mallory).get(URL).json()["results"] == []
    for method in ("get", "patch", "delete"):
        response = getattr(api(mallory), method)(f"{URL}/{created['id']}", {"name": "x"}, format="json")
        assert response.status_code == 404
    assert api(bob).get(URL).json()["results"][0]["id"] == created["id"]
    assert api(bob).post(URL, window_body(name="b"), format="json").status_code == 403
    assert MaintenanceWindow.objects.get().name == "patch night"

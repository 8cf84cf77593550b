"""`/api/v1/incidents` and its verbs, the tenant wall (alice and bob of tenant A, mallory of B,
staff), filters and bad input, and the incident admin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Scope, Tenant, User
from accounts.services import api_key_create
from observability.models import Incident, IncidentStatus
from rules.models import Event

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


def make_incident(
    *, kind: str = "flood_tenant", subject: str = "x", tenant: Tenant | None = None, **fields: Any
) -> Incident:
    now = timezone.now()
    values: dict[str, Any] = {
        "severity": "warning",
        "summary": f"{kind} {subject}",
        "evidence": {"requests": 1},
        "first_seen": now,
        "last_seen": now,
        **fields,
    }
    return Incident.objects.create(kind=kind, subject=subject, tenant_uuid=tenant.uuid if tenant else None, **values)


@pytest.fixture
def incidents(tenant_a: Tenant, tenant_b: Tenant) -> dict[str, Incident]:
    return {
        "a": make_incident(subject=str(tenant_a.uuid), tenant=tenant_a, severity="critical"),
        "b": make_incident(subject=str(tenant_b.uuid), tenant=tenant_b),
        "fleet": make_incident(kind="flood_ip", subject="203.0.113.9"),
    }


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_each_tenant_sees_its_own_incidents_and_staff_see_all(
    api: Api, alice: User, bob: User, mallory: User, staff: User, incidents: dict[str, Incident]
) -> None:
    assert ids(api(alice).get("/api/v1/incidents")) == {incidents["a"].pk}
    assert ids(api(bob).get("/api/v1/incidents")) == {incidents["a"].pk}
    assert ids(api(mallory).get("/api/v1/incidents")) == {incidents["b"].pk}
    assert ids(api(staff).get("/api/v1/incidents")) == {incident.pk for incident in incidents.values()}
    assert api(mallory).get(f"/api/v1/incidents/{incidents['a'].pk}").status_code == 404
    assert api(alice).get(f"/api/v1/incidents/{incidents['fleet'].pk}").status_code == 404
    detail = api(alice).get(f"/api/v1/incidents/{incidents['a'].pk}").json()
    assert (detail["kind"], detail["severity"], detail["status"]) == ("flood_tenant", "critical", "open")
    assert api().get("/api/v1/incidents").status_code == 401


def test_filters_by_kind_severity_status_and_time(api: Api, staff: User, incidents: dict[str, Incident]) -> None:
    client = api(staff)
    assert ids(client.get("/api/v1/incidents?kind=flood_ip")) == {incidents["fleet"].pk}
    assert ids(client.get("/api/v1/incidents?severity=critical")) == {incidents["a"].pk}
    assert ids(client.get("/api/v1/incidents?status=resolved")) == set()
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    assert ids(client.get("/api/v1/incidents", {"until": past})) == set()
    assert len(ids(client.get("/api/v1/incidents", {"since": past}))) == 3
    # An offset PostgreSQL would refuse (past 15:59) is still a time: it is compared in UTC.
    assert len(ids(client.get("/api/v1/incidents", {"since": "1547-08-16T03:30:50.5-19:06"}))) == 3


@pytest.mark.parametrize(
    "query",
    [
        "kind=nope",
        "severity=loud",
        "status=x",
        "since=yesterday",
        "until=2026-13-45T00:00:00",
        "since=0001-01-01T00:00:00+05:00",
        "since=" + "9" * 80,
    ],
)
def test_bad_filters_answer_400_with_the_error_shape(api: Api, staff: User, query: str) -> None:
    response = api(staff).get(f"/api/v1/incidents?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] and error["message"] and query.split("=")[0] in error["details"]


def test_a_member_acknowledges_and_an_admin_resolves_with_a_resolution_event(
    api: Api, alice: User, bob: User, mallory: User, tenant_a: Tenant, incidents: dict[str, Incident]
) -> None:
    url = f"/api/v1/incidents/{incidents['a'].pk}"
    assert api(mallory).post(f"{url}/acknowledge").status_code == 404
    acknowledged = api(bob).post(f"{url}/acknowledge")
    assert acknowledged.status_code == 200
    assert (acknowledged.json()["status"], acknowledged.json()["acknowledged_by"]) == ("acknowledged", "bob")
    resolved = api(alice).post(f"{url}/resolve")
    assert (resolved.status_code, resolved.json()["status"]) == (200, "resolved")
    [event] = Event.objects.filter(tenant=tenant_a, type="incident")
    assert (event.payload["status"], event.payload["change"], event.payload["resolved_by"]) == (
        "resolved",
        "resolved",
        "alice",
    )
    again = api(alice).post(f"{url}/resolve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "incident_resolved"
    assert api(alice).post(f"{url}/acknowledge").status_code == 409


def test_api_keys_read_with_api_read_and_act_with_api_write(
    api: Api, alice: User, tenant_a: Tenant, incidents: dict[str, Incident]
) -> None:
    _, reader = api_key_create(tenant=tenant_a, name="reader", scopes=[Scope.API_READ.value])
    _, writer = api_key_create(tenant=tenant_a, name="writer", scopes=[Scope.API_WRITE.value])
    url = f"/api/v1/incidents/{incidents['a'].pk}"
    assert ids(api(api_key=reader).get("/api/v1/incidents")) == {incidents["a"].pk}
    assert api(api_key=reader).post(f"{url}/acknowledge").status_code == 403
    response = api(api_key=writer).post(f"{url}/acknowledge")
    assert response.status_code == 200 and response.json()["acknowledged_by"].startswith("api key ")


def test_the_schema_documents_incidents_and_insight(api: Api, staff: User) -> None:
    schema = api(staff).get("/api/schema/?format=json").json()
    assert {
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/acknowledge",
        "/api/v1/incidents/{id}/resolve",
        "/ai/insight",
    } <= set(schema["paths"])


def test_the_admin_lists_filters_and_acts_through_the_services(
    staff: User, tenant_a: Tenant, incidents: dict[str, Incident]
) -> None:
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/observability/incident/?state=unresolved")
    assert page.status_code == 200
    assert b"203.0.113.9" in page.content and b"wonderland" in page.content and b"fleet" in page.content
    chosen = [incidents["a"].pk, incidents["b"].pk]
    client.post("/admin/observability/incident/", {"action": "acknowledge", "_selected_action": chosen})
    assert set(Incident.objects.filter(pk__in=chosen).values_list("status", flat=True)) == {IncidentStatus.ACKNOWLEDGED}
    client.post("/admin/observability/incident/", {"action": "resolve", "_selected_action": [incidents["a"].pk]})
    assert Incident.objects.get(pk=incidents["a"].pk).status == IncidentStatus.RESOLVED
    assert Event.objects.filter(tenant=tenant_a, type="incident", payload__resolved_by="staff").count() == 1
    detail = client.get(f"/admin/observability/incident/{incidents['fleet'].pk}/change/")
    assert detail.status_code == 200 and b"&quot;requests&quot;: 1" in detail.content

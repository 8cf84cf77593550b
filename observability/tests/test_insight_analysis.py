"""The analysis task's service against the real database: request-log rows and failed logins in,
incidents and `incident` events out, once, however often or concurrently it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from accounts.models import LoginFailure, LoginFailureReason, Tenant, User
from accounts.services import login_failure_log
from gateway.models import Route
from observability import services
from observability.models import Decision, Incident, IncidentStatus, InsightState, RequestLog
from observability.tests.insight_support import flood_send, traffic_write
from rules.models import Event

pytestmark = pytest.mark.django_db(transaction=True)
FLOOD_IP = "203.0.113.9"


@pytest.fixture
def insight(settings: Settings, tenant_a: Tenant) -> Callable[..., Any]:
    """Fleet-wide incidents go to tenant A's rules; returns `run(now=..., **overrides)`."""
    settings.SENTINEL_INSIGHT = {**settings.SENTINEL_INSIGHT, "EVENTS_TENANT": tenant_a.slug}

    def run(now: datetime | None = None, claim: bool = False, **overrides: Any) -> services.AnalysisReport | None:
        if overrides:
            settings.SENTINEL_INSIGHT = {**settings.SENTINEL_INSIGHT, **overrides}
        return services.insight_analyse_run(now=now, claim=claim)

    return run


def incident_events(tenant: Tenant | None = None) -> list[dict[str, Any]]:
    events = Event.objects.filter(type="incident").order_by("id")
    if tenant is not None:
        events = events.filter(tenant=tenant)
    return [event.payload for event in events]


def test_a_flood_from_one_address_opens_one_incident_with_the_figures(insight: Any, tenant_a: Tenant) -> None:
    flood_send(client_ip=FLOOD_IP, count=1240, limited=1203)
    first = insight()
    insight(now=timezone.now())
    [incident] = Incident.objects.all()
    assert first is not None and first.opened == [incident.pk]
    assert (incident.kind, incident.subject, incident.severity, incident.tenant_uuid) == (
        "flood_ip",
        FLOOD_IP,
        "critical",
        None,
    )
    assert incident.summary.startswith(f"Traffic from {FLOOD_IP} is 1,240 req/min")
    assert incident.summary.endswith("97 % answered 429.")
    assert incident.evidence["limited"] == 1203
    [event] = incident_events(tenant_a)  # opened once, not again on the second analysis
    assert event["type"] == "incident"
    assert (event["kind"], event["severity"], event["status"], event["incident_id"]) == (
        "flood_ip",
        "critical",
        "open",
        incident.pk,
    )


def test_twenty_requests_to_a_quiet_api_are_no_flood(insight: Any) -> None:
    traffic_write(count=20, client_ip=FLOOD_IP)
    insight()
    assert not Incident.objects.exists()


def test_an_incident_escalates_once_and_resolves_after_the_quiet_periods(insight: Any, tenant_a: Tenant) -> None:
    start = timezone.now()
    flood_send(client_ip=FLOOD_IP, count=400)  # 400 req/min against the floor of 300: a warning
    insight(now=start)
    flood_send(client_ip=FLOOD_IP, count=1000)  # 1,400 in the window: critical
    insight(now=timezone.now())
    incident = Incident.objects.get()
    assert incident.severity == "critical"
    # The flood stops: its rows leave the window, and after 5 quiet periods the incident resolves.
    quiet = [timezone.now() + timedelta(seconds=61 + 60 * n) for n in range(6)]
    for now in quiet[:4]:
        insight(now=now)
    assert Incident.objects.get().status == IncidentStatus.OPEN
    for now in quiet[4:]:
        insight(now=now)
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED and incident.resolved_at is not None
    changes = [(e["change"], e["severity"], e["status"]) for e in incident_events(tenant_a)]
    assert changes == [
        ("opened", "warning", "open"),
        ("escalated", "critical", "open"),
        ("resolved", "critical", "resolved"),
    ]


def test_an_incident_that_calms_down_keeps_its_peak_figures(insight: Any) -> None:
    """Severity never drops while an incident lasts; its summary and figures follow the present,
    and `evidence.peak` keeps the figures the severity stands for (found by the new-user trial:
    a critical incident showed only the calmer present)."""
    flood_send(client_ip=FLOOD_IP, count=1400)  # critical
    insight(now=timezone.now())
    RequestLog.objects.update(time=F("time") - timedelta(minutes=10))  # out of the next window
    flood_send(client_ip=FLOOD_IP, count=400)  # a warning's worth
    insight(now=timezone.now())

    incident = Incident.objects.get()
    assert incident.severity == "critical"
    assert incident.summary.startswith(f"Traffic from {FLOOD_IP} is 400 req/min")
    assert incident.evidence["requests"] == 400
    assert (incident.evidence["peak"]["severity"], incident.evidence["peak"]["requests"]) == ("critical", 1400)
    assert "1,400 req/min" in incident.evidence["peak"]["summary"]


def test_the_baseline_learns_a_normal_level_and_is_kept(insight: Any) -> None:
    start = timezone.now()
    traffic_write(count=100, client_ip=FLOOD_IP, at=start)  # 100 req/min: under the floor
    insight(now=start)
    baseline = InsightState.objects.get().baselines["flood_ip"][FLOOD_IP]
    assert 0 < baseline < 100  # one period of a one-hour EWMA moved it a little towards 100
    insight(now=start + timedelta(seconds=60))  # silence decays it
    assert InsightState.objects.get().baselines["flood_ip"][FLOOD_IP] < baseline


def test_one_analysis_per_period_even_if_asked_twice(insight: Any) -> None:
    now = timezone.now()
    assert services.insight_analyse_run(now=now) is not None
    assert services.insight_analyse_run(now=now + timedelta(seconds=1)) is None  # claimed
    assert services.insight_analyse_run(now=now + timedelta(seconds=31)) is not None  # half a period on


def test_two_analyses_at_once_open_one_incident_and_one_event(insight: Any, tenant_a: Tenant) -> None:
    flood_send(client_ip=FLOOD_IP, count=1240)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def analyse() -> None:
        try:
            barrier.wait(timeout=10)
            services.insight_analyse_run(claim=False)  # no election: the constraint must hold alone
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=analyse) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert Incident.objects.filter(kind="flood_ip", subject=FLOOD_IP).count() == 1
    assert [e["change"] for e in incident_events(tenant_a)] == ["opened"]


def test_a_tenants_flood_is_the_tenants_incident_and_event(insight: Any, tenant_a: Tenant, tenant_b: Tenant) -> None:
    traffic_write(count=3500, client_ip="198.51.100.20", tenant_uuid=tenant_b.uuid)
    insight(FLOOD_IP_FLOOR_PER_MIN=10_000)  # only the tenant's flood this time
    incident = Incident.objects.get()
    assert (incident.kind, incident.subject, incident.tenant_uuid) == (
        "flood_tenant",
        str(tenant_b.uuid),
        tenant_b.uuid,
    )
    assert incident.summary.startswith("Traffic of tenant evil is 3,500 req/min")
    assert incident_events(tenant_a) == []
    assert [e["kind"] for e in incident_events(tenant_b)] == ["flood_tenant"]


def test_twenty_failed_logins_open_a_brute_force_incident(insight: Any, alice: User) -> None:
    client = APIClient(REMOTE_ADDR="192.0.2.44")
    answers = [
        client.post("/auth/token", {"username": "alice", "password": f"guess-{n}"}, format="json").status_code
        for n in range(20)
    ]
    assert answers == [401] * 5 + [429] * 15  # the limiter locks the username after five
    reasons = list(LoginFailure.objects.values_list("reason", flat=True))
    assert sorted(set(reasons)) == [LoginFailureReason.BAD_CREDENTIALS, LoginFailureReason.LOCKED_OUT]
    insight()
    by_kind = {incident.kind: incident for incident in Incident.objects.all()}
    assert set(by_kind) == {"brute_force_ip", "brute_force_user"}
    assert by_kind["brute_force_ip"].subject == "192.0.2.44"
    assert by_kind["brute_force_ip"].summary == "20 failed logins from 192.0.2.44 in 5 minutes."
    assert (by_kind["brute_force_user"].subject, by_kind["brute_force_user"].tenant_uuid) == (
        "alice",
        alice.tenant.uuid if alice.tenant else None,
    )


def test_gateway_auth_failures_count_towards_brute_force(insight: Any) -> None:
    traffic_write(count=12, client_ip="192.0.2.45", status=401, decision=Decision.AUTH_FAILED)
    insight()
    incident = Incident.objects.get(kind="brute_force_ip")
    assert incident.summary == "12 rejected gateway credentials from 192.0.2.45 in 5 minutes."


def test_failed_logins_past_the_retention_are_purged(insight: Any) -> None:
    old = timezone.now() - timedelta(days=2)
    login_failure_log(username="x", ip="192.0.2.1", reason=LoginFailureReason.BAD_CREDENTIALS, door="api", at=old)
    login_failure_log(username="x", ip="not an address", reason=LoginFailureReason.BAD_CREDENTIALS, door="admin")
    insight()
    assert list(LoginFailure.objects.values_list("client_ip", flat=True)) == [None]


def test_a_routes_error_spike_and_latency_regression_belong_to_its_tenant(insight: Any, tenant_b: Tenant) -> None:
    route = Route.objects.create(name="orders", path_prefix="/evil/orders", tenant=tenant_b)
    common = {"route": "/evil/orders", "route_id": route.pk, "client_ip": "198.51.100.30"}
    start = timezone.now() - timedelta(seconds=120)
    traffic_write(count=100, latency_ms=80, at=start, **common)  # the route's normal p95: 75-100 ms
    insight(now=start + timedelta(seconds=1))
    traffic_write(count=80, latency_ms=900, **common)
    traffic_write(count=20, status=502, decision=Decision.UPSTREAM_ERROR, **common)
    insight()
    by_kind = {incident.kind: incident for incident in Incident.objects.all()}
    assert set(by_kind) == {"error_spike", "latency_regression"}
    assert {incident.tenant_uuid for incident in by_kind.values()} == {tenant_b.uuid}
    assert by_kind["error_spike"].summary.startswith("Route /evil/orders answers 5xx to 20 % of requests (20 of 100")
    assert by_kind["latency_regression"].severity == "critical"


def test_a_flapping_breaker_is_found(insight: Any) -> None:
    traffic_write(
        count=4,
        status=502,
        decision=Decision.UPSTREAM_ERROR,
        upstream="http://10.0.0.5:8080",
        breaker_transition="open",
    )
    insight()
    incident = Incident.objects.get()
    assert (incident.kind, incident.subject, incident.severity) == (
        "breaker_flapping",
        "http://10.0.0.5:8080",
        "warning",
    )

"""Reads of the observability app: the heartbeat, the insight engine's window aggregates (a few
GROUP BY queries over the request log's indexes; rows are never loaded into Python) and incidents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When

from accounts.models import Membership, Tenant
from accounts.selectors import Caller
from gateway.models import Route
from observability.insight.detectors import LATENCY_BUCKETS_MS, RouteWindow, Traffic
from observability.models import SEVERITY_RANK, Decision, Heartbeat, Incident, InsightState, RequestLog
from observability.services.heartbeat import WORKER_HEARTBEAT


def heartbeat_last(*, name: str = WORKER_HEARTBEAT) -> datetime | None:
    return Heartbeat.objects.filter(name=name).values_list("last_seen", flat=True).first()


# --- The insight engine's window aggregates ----------------------------------------------------


def _window(since: datetime, until: datetime) -> QuerySet[RequestLog]:
    return RequestLog.objects.filter(time__gte=since, time__lt=until)


def traffic_by_client_ip(*, since: datetime, until: datetime, limit: int) -> list[Traffic]:
    """Requests and 429s per client IP in [since, until), busiest first, at most `limit`."""
    rows = (
        _window(since, until)
        .exclude(client_ip=None)
        .values("client_ip")
        .annotate(requests=Count("id"), limited=Count("id", filter=Q(status=429)))
        .order_by("-requests")[:limit]
    )
    return [Traffic(subject=str(row["client_ip"]), requests=row["requests"], limited=row["limited"]) for row in rows]


def traffic_by_tenant(*, since: datetime, until: datetime, limit: int) -> list[Traffic]:
    """Requests and 429s per tenant in [since, until), busiest first, with the tenants' slugs."""
    rows: list[dict[str, Any]] = [
        dict(row)
        for row in _window(since, until)
        .exclude(tenant_uuid=None)
        .values("tenant_uuid")
        .annotate(requests=Count("id"), limited=Count("id", filter=Q(status=429)))
        .order_by("-requests")[:limit]
    ]
    slugs = dict(Tenant.objects.filter(uuid__in=[row["tenant_uuid"] for row in rows]).values_list("uuid", "slug"))
    return [
        Traffic(
            subject=str(row["tenant_uuid"]),
            requests=row["requests"],
            limited=row["limited"],
            label=slugs.get(row["tenant_uuid"], ""),
            tenant_uuid=str(row["tenant_uuid"]),
        )
        for row in rows
    ]


def _latency_bucket() -> Case:
    """The index of a row's latency in LATENCY_BUCKETS_MS, computed by the database."""
    finite = [bound for bound in LATENCY_BUCKETS_MS if bound != float("inf")]
    whens = [When(latency_ms__lte=bound, then=Value(index)) for index, bound in enumerate(finite)]
    return Case(*whens, default=Value(len(finite)), output_field=IntegerField())


def route_windows(*, since: datetime, until: datetime, limit: int) -> list[RouteWindow]:
    """Per route in [since, until): requests, 5xx answers, and the latency histogram of the
    requests forwarded upstream (two GROUP BYs), with each route's tenant."""
    window = _window(since, until).exclude(route_id=None)
    totals: list[dict[str, Any]] = [
        dict(row)
        for row in window.values("route_id", "route")
        .annotate(requests=Count("id"), errors=Count("id", filter=Q(status__gte=500)))
        .order_by("-requests")[:limit]
    ]
    histogram: dict[int, list[int]] = {row["route_id"]: [0] * len(LATENCY_BUCKETS_MS) for row in totals}
    buckets = (
        window.filter(decision=Decision.FORWARDED, route_id__in=list(histogram))
        .annotate(bucket=_latency_bucket())
        .values("route_id", "bucket")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in buckets:
        histogram[row["route_id"] or 0][row["bucket"]] = row["n"]  # never None: excluded above
    tenants: dict[int, Any] = dict(Route.objects.filter(pk__in=list(histogram)).values_list("pk", "tenant__uuid"))
    return [
        RouteWindow(
            subject=row["route"] or f"route {row['route_id']}",
            route_id=row["route_id"],
            requests=row["requests"],
            errors=row["errors"],
            latency_buckets=tuple(histogram[row["route_id"]]),
            tenant_uuid=str(tenants[row["route_id"]]) if tenants.get(row["route_id"]) else None,
        )
        for row in totals
    ]


def gateway_auth_failures_by_ip(*, since: datetime, until: datetime, limit: int) -> dict[str, int]:
    """The proxy's `auth_failed` answers per client IP in [since, until), most first."""
    rows = (
        _window(since, until)
        .filter(decision=Decision.AUTH_FAILED)
        .exclude(client_ip=None)
        .values("client_ip")
        .annotate(n=Count("id"))
        .order_by("-n")[:limit]
    )
    return {str(row["client_ip"]): row["n"] for row in rows}


def breaker_opens_by_upstream(*, since: datetime, until: datetime, limit: int) -> dict[str, int]:
    """How many requests' outcomes moved their upstream's breaker to open in [since, until)."""
    rows = (
        _window(since, until)
        .filter(breaker_transition="open")
        .values("upstream")
        .annotate(n=Count("id"))
        .order_by("-n")[:limit]
    )
    return {str(row["upstream"]): row["n"] for row in rows}


# --- Incidents and the insight state ------------------------------------------------------------


@dataclass(frozen=True)
class IncidentFilters:
    """What `GET /api/v1/incidents` filters by; None means any."""

    kind: str | None = None
    severity: str | None = None
    status: str | None = None
    since: datetime | None = None  # still seen at or after this time
    until: datetime | None = None  # first seen before this time


def incident_list(*, filters: IncidentFilters | None = None) -> QuerySet[Incident]:
    """Incidents, most recently seen first, narrowed by `filters` (an incident matches a time
    range when it was going on during it: last seen after `since`, first seen before `until`)."""
    queryset = Incident.objects.all()
    if filters is None:
        return queryset
    exact = {"kind": filters.kind, "severity": filters.severity, "status": filters.status}
    queryset = queryset.filter(**{name: value for name, value in exact.items() if value is not None})
    if filters.since is not None:
        queryset = queryset.filter(last_seen__gte=filters.since)
    if filters.until is not None:
        queryset = queryset.filter(first_seen__lt=filters.until)
    return queryset


def incidents_visible(queryset: QuerySet[Incident], *, caller: Caller) -> QuerySet[Incident]:
    """The tenant wall: staff see every incident, others only their tenant's (fleet-wide ones,
    about an address or an upstream, have no tenant and are staff's)."""
    if caller.is_staff:
        return queryset
    if caller.tenant is None:
        return queryset.none()
    return queryset.filter(tenant_uuid=caller.tenant.uuid)


def incidents_unresolved_for(*, caller: Caller | None, limit: int | None = None) -> list[Incident]:
    """The unresolved incidents `caller` may see (None: every one, for fleet-wide views such as
    the dashboard's staff tile), most severe first, then most recently seen."""
    queryset: QuerySet[Incident] = Incident.objects.unresolved()
    if caller is not None:
        queryset = incidents_visible(queryset, caller=caller)
    rank = Case(
        *(When(severity=severity, then=Value(-order)) for severity, order in SEVERITY_RANK.items()),
        default=Value(0),
        output_field=IntegerField(),
    )
    ordered = queryset.annotate(rank=rank).order_by("rank", "-last_seen", "-id")
    return list(ordered[:limit] if limit is not None else ordered)


def insight_state() -> InsightState | None:
    return InsightState.objects.filter(pk=1).first()


def tenant_by_uuid(*, uuid: Any) -> Tenant | None:
    return Tenant.objects.filter(uuid=uuid).first()


def tenants_by_uuid(*, uuids: Iterable[Any]) -> dict[str, Tenant]:
    return {str(tenant.uuid): tenant for tenant in Tenant.objects.filter(uuid__in=list(uuids))}


def operator_tenant(*, slug: str) -> Tenant | None:
    """Where fleet-wide incidents go as events: the tenant `slug` names (INSIGHT_EVENTS_TENANT),
    else the tenant of the first staff user (by id) who belongs to one, else None."""
    if slug:
        return Tenant.objects.filter(slug=slug).first()
    membership = (
        Membership.objects.filter(user__is_staff=True, user__is_active=True)
        .select_related("tenant")
        .order_by("user_id")
        .first()
    )
    return membership.tenant if membership else None

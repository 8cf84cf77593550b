"""Reads of the observability app: the heartbeat, the insight engine's window aggregates (a few
GROUP BY queries over the request log's indexes; rows are never loaded into Python) and incidents."""

from __future__ import annotations

import uuid
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


# --- the request log ------------------------------------------------------------------------------
#
# Every predicate below is one the table's indexes answer in time order (RequestLog.Meta.indexes):
# the listing walks (-time) or (tenant_uuid, -time) newest first and stops at its LIMIT, and the
# selective filters (route, client IP, status, correlation id) have an index of their own that the
# planner may start from instead. Nothing here counts rows.


@dataclass(frozen=True)
class RequestLogFilters:
    """What a reader narrows the request log to; every field optional, all of them ANDed.

    - ``since`` (inclusive) and ``until`` (exclusive): aware datetimes bounding ``time``;
    - ``route_id``: a route's id; ``route_prefix``: a route's path prefix (matched through the
      route it names today, else against the prefix the row recorded);
    - ``statuses``: exact status codes and ``status_classes`` whole classes (5 for 5xx), ORed;
    - ``decisions``: values of ``Decision``, ORed;
    - ``client_ip``, ``correlation_id``, ``method``: exact; ``path_prefix``: ``path`` starts with it;
    - ``tenant_uuid``: one tenant's rows (a staff reader's choice: the wall is applied apart).
    """

    since: datetime | None = None
    until: datetime | None = None
    route_id: int | None = None
    route_prefix: str | None = None
    statuses: tuple[int, ...] = ()
    status_classes: tuple[int, ...] = ()
    decisions: tuple[str, ...] = ()
    client_ip: str | None = None
    correlation_id: str | None = None
    path_prefix: str | None = None
    method: str | None = None
    tenant_uuid: uuid.UUID | None = None


@dataclass(frozen=True)
class LogPosition:
    """A row's place in the log's order, (time, id): the keyset a cursor carries."""

    time: datetime
    id: int


def request_logs_for(
    *, tenant_uuid: uuid.UUID | None, everyone: bool = False, filters: RequestLogFilters | None = None
) -> QuerySet[RequestLog]:
    """The request log as one reader may see it, newest first (ordered by ``-time, -id``).

    ``everyone=True`` (staff) sees every row, anonymous callers' (``tenant_uuid`` null) included;
    otherwise only the rows of ``tenant_uuid``, and nothing at all when it is None (a caller with
    no tenant). ``filters`` narrow it further (``RequestLogFilters``).
    """
    queryset = RequestLog.objects.all()
    if not everyone:
        queryset = queryset.filter(tenant_uuid=tenant_uuid) if tenant_uuid is not None else queryset.none()
    if filters is not None:
        queryset = queryset.filter(_filters_q(filters))
    return queryset.order_by("-time", "-id")


def request_logs_after(queryset: QuerySet[RequestLog], *, position: LogPosition) -> QuerySet[RequestLog]:
    """The rows older than ``position`` in the log's order, newest first (the next page).

    Written as ``time <= t AND (time < t OR id < i)`` rather than the row comparison
    ``(time, id) < (t, i)``: both databases understand it, and its first half is a range the time
    indexes answer, so the scan still starts at ``t`` and stops at the LIMIT.
    """
    older = Q(time__lt=position.time) | Q(id__lt=position.id)
    return queryset.filter(Q(time__lte=position.time) & older).order_by("-time", "-id")


def request_logs_before(queryset: QuerySet[RequestLog], *, position: LogPosition) -> QuerySet[RequestLog]:
    """The rows newer than ``position``, OLDEST first (the previous page, read backwards: the
    caller reverses the slice it takes)."""
    newer = Q(time__gt=position.time) | Q(id__gt=position.id)
    return queryset.filter(Q(time__gte=position.time) & newer).order_by("time", "id")


def _filters_q(filters: RequestLogFilters) -> Q:
    q = Q()
    if filters.since is not None:
        q &= Q(time__gte=filters.since)
    if filters.until is not None:
        q &= Q(time__lt=filters.until)
    if filters.tenant_uuid is not None:
        q &= Q(tenant_uuid=filters.tenant_uuid)
    q &= _route_q(filters) & _status_q(filters)
    if filters.decisions:
        q &= Q(decision__in=filters.decisions)
    exact = {"client_ip": filters.client_ip, "correlation_id": filters.correlation_id, "method": filters.method}
    q &= Q(**{field: value for field, value in exact.items() if value is not None})
    if filters.path_prefix:
        q &= Q(path__startswith=filters.path_prefix)
    return q


def _route_q(filters: RequestLogFilters) -> Q:
    """A route by id, or by path prefix. A prefix that names a route today matches that route's
    rows by id (indexed, and right across a later change of the prefix); a prefix no route has any
    more matches the rows that recorded it."""
    q = Q()
    if filters.route_id is not None:
        q &= Q(route_id=filters.route_id)
    if filters.route_prefix:
        route_id = Route.objects.filter(path_prefix=filters.route_prefix).values_list("id", flat=True).first()
        q &= Q(route_id=route_id) if route_id is not None else Q(route=filters.route_prefix)
    return q


def _status_q(filters: RequestLogFilters) -> Q:
    """Exact codes and classes, ORed: ``status=404,5xx`` is 404 or any of 500-599."""
    if not (filters.statuses or filters.status_classes):
        return Q()
    q = Q(status__in=filters.statuses) if filters.statuses else Q()
    for hundreds in filters.status_classes:
        q |= Q(status__gte=hundreds * 100, status__lt=(hundreds + 1) * 100)
    return q


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
    return _most_severe_first(queryset, limit)


def incidents_unresolved_in(*, tenant_uuid: str | None, limit: int | None = None) -> list[Incident]:
    """The unresolved incidents of a dashboard scope, ordered as `incidents_unresolved_for`:
    every one for the fleet (`tenant_uuid` None, staff only), else only that tenant's, which is
    what `incidents_unresolved_for` gives a member of that tenant (fleet-wide ones are staff's)."""
    queryset: QuerySet[Incident] = Incident.objects.unresolved()
    if tenant_uuid is not None:
        queryset = queryset.filter(tenant_uuid=tenant_uuid)
    return _most_severe_first(queryset, limit)


def _most_severe_first(queryset: QuerySet[Incident], limit: int | None) -> list[Incident]:
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

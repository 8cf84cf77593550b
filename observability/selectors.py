"""Reads of the observability app."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

from gateway.models import Route
from observability.models import Heartbeat, RequestLog
from observability.services import WORKER_HEARTBEAT


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

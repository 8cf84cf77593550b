"""The monitors REST API (SPEC 5): monitors, their history and uptime, and maintenance windows.

Every resource stands behind ``TenantScopedViewSet``: lists and lookups are walled by tenant
(another tenant's monitor answers 404 on every path, history and uptime included), new objects go
to the caller's tenant, roles and API-key scopes are checked by its permissions. Writes go
through ``monitors.services``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Model, QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from accounts.api.scoping import TenantScopedViewSet
from accounts.models import Role, Tenant
from core.openapi import error_responses
from core.query_params import iso_moment
from monitors import selectors, services
from monitors.api.serializers import (
    CheckResultSerializer,
    HistoryPageSerializer,
    MaintenanceWindowSerializer,
    MonitorSerializer,
    UptimeSerializer,
    monitor_fields,
    window_fields,
)
from monitors.models import CheckOutcome, MaintenanceWindow, Monitor

# Ids are integers: a longer run of digits names no row (and would overflow the column).
_ID = r"[0-9]{1,9}"
HISTORY_PARAMETERS = frozenset({"since", "until", "outcome", "cursor", "limit", "format"})


def _invalid(name: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]})


def _moment(request: Request, name: str) -> datetime | None:
    return iso_moment(request.query_params.get(name), name=name)


def _history_query(request: Request) -> dict[str, Any]:
    """The history's query string as ``selectors.history`` arguments; a 400 names each bad one,
    and each parameter it does not know (a typo must not silently return every row)."""
    unknown = sorted(set(request.query_params) - HISTORY_PARAMETERS)
    if unknown:
        known = ", ".join(sorted(HISTORY_PARAMETERS - {"format"}))
        raise exceptions.ValidationError(
            {name[:40]: [f"Unknown parameter; the filters are {known}."] for name in unknown[:5]}
        )
    since, until = _moment(request, "since"), _moment(request, "until")
    if since is not None and until is not None and since >= until:
        raise _invalid("until", "Must be later than since.")
    outcome = request.query_params.get("outcome") or None
    if outcome is not None and outcome not in CheckOutcome.values:
        raise _invalid("outcome", f"One of {', '.join(CheckOutcome.values)}.")
    raw_limit = request.query_params.get("limit") or ""
    limit = selectors.HISTORY_DEFAULT_LIMIT
    if raw_limit:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= selectors.HISTORY_MAX_LIMIT:
            raise _invalid("limit", f"Must be a whole number from 1 to {selectors.HISTORY_MAX_LIMIT}.")
        limit = int(raw_limit)
    cursor = request.query_params.get("cursor") or None
    return {"since": since, "until": until, "outcome": outcome, "cursor": cursor, "limit": limit}


_HISTORY_PARAMETERS = [
    OpenApiParameter(
        "since", OpenApiTypes.DATETIME, description="Checks at or after this time (ISO 8601; no offset: UTC)."
    ),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Checks before this time (ISO 8601; no offset: UTC)."),
    OpenApiParameter("outcome", OpenApiTypes.STR, enum=CheckOutcome.values, description="Only checks of this outcome."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="Opaque: taken from a page's next link."),
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"Results a page (1-{selectors.HISTORY_MAX_LIMIT}, default {selectors.HISTORY_DEFAULT_LIMIT}).",
    ),
]

_CONFLICTS = {"create": (201, 409), "update": (200, 409), "partial_update": (200, 409)}
# Run-state changes: an admin's, or a key with api:write. A check now is harmless: members too.
_OPERATOR_ACTIONS = ("check_now",)


@extend_schema_view(
    **{
        name: extend_schema(responses={ok: MonitorSerializer, **error_responses(conflict)})
        for name, (ok, conflict) in _CONFLICTS.items()
    }
)
class MonitorViewSet(TenantScopedViewSet):
    """`/api/v1/monitors`: tenant admins manage monitors, members read them (and may ask for a
    check now). A bad field is a 400 naming it; a condition that does not compile a 400 with its
    line and column; a target the egress policy refuses a 400 `egress_denied`; a name taken in the
    tenant a 409."""

    serializer_class = MonitorSerializer
    lookup_value_regex = _ID

    @property
    def write_roles(self) -> tuple[str, ...]:
        if self.action in _OPERATOR_ACTIONS:
            return (Role.ADMIN, Role.MEMBER)
        return (Role.ADMIN,)

    def get_base_queryset(self) -> QuerySet[Monitor]:
        return selectors.monitor_list()

    def create_object(self, *, tenant: Tenant, data: dict[str, Any]) -> Model:
        return services.monitor_create(tenant=tenant, **monitor_fields(data))

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        assert isinstance(instance, Monitor)
        return services.monitor_update(monitor=instance, **monitor_fields(data))

    def delete_object(self, *, instance: Model) -> None:
        assert isinstance(instance, Monitor)
        services.monitor_delete(monitor=instance)

    def _answer(self, monitor: Monitor, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=monitor.pk)).data, status=code)

    @extend_schema(request=None, responses={200: MonitorSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        """Stops the checks: state `paused`, no alert."""
        return self._answer(services.monitor_pause(monitor=self.get_object()))

    @extend_schema(request=None, responses={200: MonitorSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Starts the checks again: state `unknown` until the thresholds decide, first check now."""
        return self._answer(services.monitor_resume(monitor=self.get_object()))

    @extend_schema(request=None, responses={202: MonitorSerializer, **error_responses(409)})
    @action(detail=True, methods=["post"], url_path="check-now")
    def check_now(self, request: Request, pk: str | None = None) -> Response:
        """Makes the next check due now; the scheduler runs it within about a second (202). A
        paused monitor answers 409 `monitor_paused`."""
        return self._answer(services.monitor_check_now(monitor=self.get_object()), status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=_HISTORY_PARAMETERS, responses={200: HistoryPageSerializer})
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request: Request, pk: str | None = None) -> Response:
        """The monitor's check results, newest first, a page at a time (follow `next`)."""
        monitor = self.get_object()
        page = selectors.history(monitor, **_history_query(request))
        next_link = None
        if page.next_cursor is not None:
            next_link = replace_query_param(request.build_absolute_uri(), "cursor", page.next_cursor)
        return Response({"next": next_link, "results": CheckResultSerializer(page.results, many=True).data})

    @extend_schema(responses={200: UptimeSerializer})
    @action(detail=True, methods=["get"], pagination_class=None)
    def uptime(self, request: Request, pk: str | None = None) -> Response:
        """Uptime %, latency p50/p95/p99 (ms) and incidents over the last 24 h, 7 d and 30 d."""
        figures = selectors.uptime(self.get_object(), now=timezone.now())
        return Response(UptimeSerializer(figures).data)


@extend_schema_view(
    **{name: extend_schema(responses={ok: MaintenanceWindowSerializer}) for name, (ok, _) in _CONFLICTS.items()}
)
class MaintenanceWindowViewSet(TenantScopedViewSet):
    """`/api/v1/maintenance-windows`: times when checks run but nothing alerts, once or weekly,
    for one monitor or the whole tenant. Tenant admins manage them, members read them."""

    serializer_class = MaintenanceWindowSerializer
    lookup_value_regex = _ID
    write_roles = (Role.ADMIN,)

    def get_base_queryset(self) -> QuerySet[MaintenanceWindow]:
        return selectors.maintenance_window_list()

    def create_object(self, *, tenant: Tenant, data: dict[str, Any]) -> Model:
        return services.maintenance_window_create(tenant=tenant, **window_fields(data))

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        assert isinstance(instance, MaintenanceWindow)
        return services.maintenance_window_update(window=instance, **window_fields(data))

    def delete_object(self, *, instance: Model) -> None:
        assert isinstance(instance, MaintenanceWindow)
        services.maintenance_window_delete(window=instance)

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.scoping import TenantScopedViewSet
from accounts.models import Role, Tenant
from accounts.selectors import caller_from_request
from core.openapi import error_responses
from gateway import services
from gateway.api.serializers import (
    CircuitResetResultSerializer,
    CircuitResetSerializer,
    CircuitStatusSerializer,
    RouteSerializer,
)
from gateway.breaker_state import breaker_reset, breaker_states, circuit_sources
from gateway.models import Route
from gateway.selectors import route_list, upstream_list


@extend_schema_view(
    create=extend_schema(responses={201: RouteSerializer, **error_responses(409)}),
    update=extend_schema(responses={200: RouteSerializer, **error_responses(409)}),
    partial_update=extend_schema(responses={200: RouteSerializer, **error_responses(409)}),
)
class RouteViewSet(TenantScopedViewSet):
    """`/api/v1/routes`: staff manage platform routes (no tenant) and any tenant's; tenant admins
    manage their own tenant's routes, whose prefixes live under `/<tenant slug>/`."""

    serializer_class = RouteSerializer
    write_roles = (Role.ADMIN,)

    def get_base_queryset(self) -> QuerySet[Route]:
        return route_list()

    def target_tenant(self, requested: Tenant | None) -> Tenant | None:  # type: ignore[override]
        if self.caller.is_staff:
            return requested  # None: a platform route
        return super().target_tenant(requested)

    def create_object(self, *, tenant: Tenant | None, data: dict[str, Any]) -> Model:
        return services.route_create(tenant=tenant, **data)

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        assert isinstance(instance, Route)
        return services.route_update(route=instance, **data)

    def delete_object(self, *, instance: Model) -> None:
        assert isinstance(instance, Route)
        services.route_delete(route=instance)


class CircuitStatusView(APIView):
    """`GET /circuit/status`: every upstream's breaker. Staff see all; others the upstreams of
    their tenant's routes. Then the breakers of SENTINEL_CIRCUIT_SOURCES (the fraud brain's,
    which every authenticated caller sees: its upstream is shared by all tenants)."""

    serializer_class = CircuitStatusSerializer

    @extend_schema(responses={200: CircuitStatusSerializer})
    def get(self, request: Request) -> Response:
        caller = caller_from_request(request)
        upstreams = upstream_list()
        if not caller.is_staff:
            if caller.tenant is None:
                raise exceptions.PermissionDenied("You do not belong to a tenant.")
            upstreams = upstreams.filter(routes__tenant=caller.tenant).distinct()
        routes_by_url = {u.url: sorted(r.path_prefix for r in u.routes.all()) for u in upstreams}
        states = breaker_states(routes_by_url)
        breakers = [{"upstream": url, "routes": routes_by_url[url], **states[url]} for url in sorted(routes_by_url)]
        for source in circuit_sources():
            breakers += source.entries(is_staff=caller.is_staff)
        return Response({"breakers": breakers})


class CircuitResetView(APIView):
    """`POST /circuit/reset {"upstream": url}`: staff force a breaker closed. `upstream` may also
    name a breaker of SENTINEL_CIRCUIT_SOURCES (e.g. "fraud-brain" or its grpc:// upstream)."""

    permission_classes = [IsAdminUser]
    serializer_class = CircuitResetSerializer

    @extend_schema(
        request=CircuitResetSerializer,
        responses={200: CircuitResetResultSerializer, **error_responses(404)},
    )
    def post(self, request: Request) -> Response:
        named = request.data.get("upstream") if isinstance(request.data, dict) else None
        if isinstance(named, str):
            for source in circuit_sources():
                outcome = source.reset(named)
                if outcome is not None:
                    was_reset, entry = outcome
                    return Response({**entry, "reset": was_reset})
        serializer = CircuitResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        url = serializer.validated_data["upstream"].rstrip("/")
        if not upstream_list().filter(url=url).exists():
            raise exceptions.NotFound("No route uses this upstream.")
        transition = breaker_reset(upstream=url)
        state = breaker_states([url])[url]
        return Response({"upstream": url, "reset": transition is not None, **state})

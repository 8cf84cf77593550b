from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import exceptions

from accounts.api.scoping import TenantScopedViewSet
from accounts.models import Role, Tenant
from gateway import services
from gateway.api.serializers import RouteSerializer
from gateway.models import Route
from gateway.selectors import route_list


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

    def perform_create(self, serializer: RouteSerializer) -> None:
        data = dict(serializer.validated_data)
        tenant = self.target_tenant(data.pop("tenant", None))
        serializer.instance = services.route_create(tenant=tenant, **data)

    def perform_update(self, serializer: RouteSerializer) -> None:
        data = dict(serializer.validated_data)
        if "tenant" in data and data.pop("tenant") != serializer.instance.tenant:
            raise exceptions.ValidationError({"tenant": ["A route cannot move to another tenant."]})
        serializer.instance = services.route_update(route=serializer.instance, **data)

    def perform_destroy(self, instance: Route) -> None:
        services.route_delete(route=instance)

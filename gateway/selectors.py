"""Reads of the gateway domain."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from gateway.engine.routes import RouteSpec
from gateway.models import Route, RouteTarget, Upstream


def route_list() -> QuerySet[Route]:
    targets = Prefetch("route_targets", queryset=RouteTarget.objects.select_related("upstream").order_by("position"))
    return Route.objects.select_related("tenant").prefetch_related(targets)


def upstream_list() -> QuerySet[Upstream]:
    return Upstream.objects.prefetch_related("routes")


def route_specs() -> list[RouteSpec]:
    """Every active route as the proxy's engine takes it, in two queries."""
    specs = []
    for route in route_list().filter(active=True):
        specs.append(
            RouteSpec(
                id=route.pk,
                name=route.name,
                path_prefix=route.path_prefix,
                targets=tuple(route.targets),
                tenant_uuid=str(route.tenant.uuid) if route.tenant else None,
                methods=frozenset(route.methods or ()),
                auth_mode=route.auth_mode,
                strip_prefix=route.strip_prefix,
                timeout_ms=route.timeout_ms,
                burst_capacity=route.burst_capacity,
                refill_rate=route.refill_rate,
                window_ms=route.window_ms,
                base_rate_limit=route.base_rate_limit,
                max_body_bytes=route.max_body_bytes,
                allow_tenant_header=route.allow_tenant_header,
            )
        )
    return specs

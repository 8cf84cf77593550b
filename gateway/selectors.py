"""Reads of the gateway domain."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from gateway.models import Route, RouteTarget, Upstream


def route_list() -> QuerySet[Route]:
    targets = Prefetch("route_targets", queryset=RouteTarget.objects.select_related("upstream").order_by("position"))
    return Route.objects.select_related("tenant").prefetch_related(targets)


def upstream_list() -> QuerySet[Upstream]:
    return Upstream.objects.prefetch_related("routes")

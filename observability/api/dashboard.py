"""`GET /stats/dashboard`: the dashboard's latest snapshot as JSON, the same the websocket pushes."""

from __future__ import annotations

import time
from typing import Any

import redis
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import caller_from_request
from core.errors import ServiceUnavailable
from core.openapi import error_responses
from core.tiles import DashboardScope
from observability.dashboard.producer import snapshots_for
from observability.dashboard.scopes import (
    ScopeDenied,
    ScopeNotFound,
    fleet_store,
    scope_for,
    snapshot_kept,
    viewer_mark,
)


class DashboardStatsView(APIView):
    """The snapshot of the caller's view: staff the whole fleet (or `?tenant=<slug>`), anyone
    else their own tenant. Served from what the producer computed this second; a view nobody
    watched yet is computed once here and kept, and the producer keeps it fresh from then on."""

    @extend_schema(
        parameters=[OpenApiParameter("tenant", OpenApiTypes.STR, description="Staff: a tenant's slug.")],
        responses={200: OpenApiTypes.OBJECT, **error_responses(403, 404, 503)},
    )
    def get(self, request: Request) -> Response:
        view = self._scope(request)
        try:
            viewer_mark(fleet_store(), view)
            snapshot = snapshot_kept(view)
            if snapshot is None:
                snapshot = snapshots_for(view, fleet=fleet_store(), now=int(time.time()))
        except (redis.RedisError, OSError) as exc:  # django-redis raises ConnectionError, an OSError
            raise ServiceUnavailable("The dashboard's figures are unavailable (Redis).", retry_after=5) from exc
        return Response(snapshot, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _scope(request: Request) -> DashboardScope:
        caller = caller_from_request(request)
        slug: Any = request.query_params.get("tenant") or None
        if caller.api_key is not None:  # a key acts as a member of its tenant
            if slug and slug != caller.api_key.tenant.slug:
                raise exceptions.PermissionDenied("You may only see your own tenant's dashboard.")
            return DashboardScope(str(caller.api_key.tenant.uuid), caller.api_key.tenant.slug)
        if caller.user is None:
            raise exceptions.NotAuthenticated()
        try:
            return scope_for(caller.user, tenant_slug=slug)
        except ScopeDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        except ScopeNotFound as exc:
            raise exceptions.NotFound(str(exc)) from None

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from observability.collectors import BreakerStateCollector
from observability.health import health_report


class HealthComponentSerializer(serializers.Serializer):
    """One component's check; each check may add keys of its own (observability.health)."""

    status = serializers.ChoiceField(choices=["ok", "down", "skipped", "unknown", "stale"])
    latency_ms = serializers.FloatField(required=False, help_text="How long the check took.")
    error = serializers.CharField(required=False, help_text="Why it is down.")
    detail = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    """The body of `GET /health`, with either status code."""

    status = serializers.ChoiceField(choices=["ok", "unhealthy"])
    mode = serializers.ChoiceField(choices=["embedded", "production"])
    components = serializers.DictField(
        child=HealthComponentSerializer(), help_text="database, redis, broker (critical) and worker."
    )


class HealthView(APIView):
    """`GET /health`: every component's state; 200 when all critical ones work, else 503."""

    # A DRF view only so that the schema documents it: no authentication, permission or
    # throttle stands in front of it, so probes reach it however the API is configured.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []
    serializer_class = HealthSerializer

    @extend_schema(
        responses={
            200: OpenApiResponse(HealthSerializer, description="Every critical component works."),
            503: OpenApiResponse(HealthSerializer, description="A critical component is down; it says which."),
        }
    )
    def get(self, request: Request) -> Response:
        healthy, report = health_report()
        return Response(report, status=200 if healthy else 503)


health = never_cache(HealthView.as_view())


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: every process's samples (multiprocess files) and the fleet-wide gauges."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(BreakerStateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

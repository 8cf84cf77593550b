from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from observability.collectors import BreakerStateCollector
from observability.health import health_report


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """`GET /health`: every component's state; 200 when all critical ones work, else 503."""
    healthy, report = health_report()
    return JsonResponse(report, status=200 if healthy else 503)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: every process's samples (multiprocess files) and the fleet-wide gauges."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(BreakerStateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

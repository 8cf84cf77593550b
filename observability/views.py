from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from observability.health import health_report


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """`GET /health`: every component's state; 200 when all critical ones work, else 503."""
    healthy, report = health_report()
    return JsonResponse(report, status=200 if healthy else 503)

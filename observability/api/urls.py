"""URLs of the observability API: ``urlpatterns`` go under ``api/v1/``, ``insight_urlpatterns``
under the site root (``/ai/insight``, SPEC 3)."""

from __future__ import annotations

from django.urls import path

from core.routers import OptionalSlashRouter
from observability.api.incidents import IncidentViewSet, InsightView
from observability.api.request_logs import RequestLogViewSet

router = OptionalSlashRouter()
router.register("request-logs", RequestLogViewSet, basename="request-log")
router.register("incidents", IncidentViewSet, basename="incident")

urlpatterns = router.urls

insight_urlpatterns = [path("ai/insight", InsightView.as_view(), name="insight")]

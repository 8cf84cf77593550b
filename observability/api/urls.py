"""URLs of the observability API, under ``api/v1/``."""

from __future__ import annotations

from core.routers import OptionalSlashRouter
from observability.api.request_logs import RequestLogViewSet

router = OptionalSlashRouter()
router.register("request-logs", RequestLogViewSet, basename="request-log")

urlpatterns = router.urls

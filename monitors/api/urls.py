"""URLs of the monitors API, under ``api/v1/``."""

from __future__ import annotations

from core.routers import OptionalSlashRouter
from monitors.api.views import MaintenanceWindowViewSet, MonitorViewSet

router = OptionalSlashRouter()
router.register("monitors", MonitorViewSet, basename="monitor")
router.register("maintenance-windows", MaintenanceWindowViewSet, basename="maintenance-window")

urlpatterns = router.urls

from __future__ import annotations

from core.routers import OptionalSlashRouter
from gateway.api.views import RouteViewSet

router = OptionalSlashRouter()
router.register("routes", RouteViewSet, basename="route")

urlpatterns = router.urls

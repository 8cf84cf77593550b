from __future__ import annotations

from gateway.api.views import RouteViewSet
from sentinel_site.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("routes", RouteViewSet, basename="route")

urlpatterns = router.urls

from __future__ import annotations

from accounts.api.views import ApiKeyViewSet, TenantViewSet
from core.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = router.urls

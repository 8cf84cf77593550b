"""URLs of the rules API.

``urlpatterns`` go under ``api/v1/``; ``event_urlpatterns`` holds the top-level ``POST /events``
alias of SPEC 4 and goes under the site root.
"""

from __future__ import annotations

from django.urls import path

from core.routers import OptionalSlashRouter
from rules.api.views import ChannelViewSet, DeliveryViewSet, EventViewSet, MatchViewSet, RuleViewSet

router = OptionalSlashRouter()
router.register("events", EventViewSet, basename="event")
router.register("rules", RuleViewSet, basename="rule")
router.register("channels", ChannelViewSet, basename="channel")
router.register("matches", MatchViewSet, basename="rule-match")
router.register("deliveries", DeliveryViewSet, basename="delivery")

urlpatterns = router.urls

# Ingest only: reading events back is `GET /api/v1/events`.
event_urlpatterns = [
    path("events", EventViewSet.as_view({"post": "create"}), name="event-ingest"),
]

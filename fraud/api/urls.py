"""URLs of the fraud API: ``urlpatterns`` go under ``api/v1/``; ``transaction_urlpatterns`` hold
SPEC 6's top-level ``POST /transaction`` and go under the site root."""

from __future__ import annotations

from django.urls import path

from core.routers import OptionalSlashRouter
from fraud.api.views import TransactionScoreView, TransactionViewSet

router = OptionalSlashRouter()
router.register("transactions", TransactionViewSet, basename="transaction")

urlpatterns = router.urls

transaction_urlpatterns = [path("transaction", TransactionScoreView.as_view(), name="transaction-score")]

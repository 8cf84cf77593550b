"""Transaction scoring by the ML brain over gRPC, and the ledger."""

from __future__ import annotations

from django.apps import AppConfig


class FraudConfig(AppConfig):
    name = "fraud"
    verbose_name = "Fraud scoring"
    default_auto_field = "django.db.models.BigAutoField"

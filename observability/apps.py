"""Request log, metrics, tracing, insights and the live dashboard."""

from __future__ import annotations

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"
    default_auto_field = "django.db.models.BigAutoField"

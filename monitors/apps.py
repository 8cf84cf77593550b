"""Uptime and health checks of endpoints, with history and alerts."""

from __future__ import annotations

from django.apps import AppConfig


class MonitorsConfig(AppConfig):
    name = "monitors"
    verbose_name = "Monitors"
    default_auto_field = "django.db.models.BigAutoField"

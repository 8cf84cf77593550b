"""Event ingestion, the rule DSL and notification delivery."""

from __future__ import annotations

from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "rules"
    verbose_name = "Rules and notifications"
    default_auto_field = "django.db.models.BigAutoField"

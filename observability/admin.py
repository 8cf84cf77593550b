from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from observability.models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seen", "age"]
    search_fields = ["name"]
    readonly_fields = ["name", "last_seen"]

    @admin.display(description="age (s)")
    def age(self, obj: Heartbeat) -> int:
        return int((timezone.now() - obj.last_seen).total_seconds())

    def has_add_permission(self, request: object) -> bool:
        return False

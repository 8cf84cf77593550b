from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin_base import short_time, shorten
from accounts.models import Tenant
from core.errors import DomainError
from observability import services
from observability.models import Heartbeat, Incident, IncidentStatus


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


# --- Incidents (the insight engine's) ----------------------------------------------------------


class UnresolvedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unresolved", "Unresolved (open or acknowledged)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        return queryset.exclude(status=IncidentStatus.RESOLVED) if self.value() == "unresolved" else queryset


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Incidents are the engine's records: staff read them, and acknowledge or resolve them
    through the services (which announce a resolution to the rules engine)."""

    list_display = [
        "kind_label",
        "subject",
        "severity_badge",
        "status",
        "tenant",
        "summary_short",
        "first",
        "last",
        "lasted",
    ]
    list_display_links = ["kind_label", "subject"]
    list_filter = [UnresolvedFilter, "status", "severity", "kind"]
    search_fields = ["subject", "summary"]
    date_hierarchy = "last_seen"
    ordering = ["-last_seen", "-id"]
    actions = ["acknowledge", "resolve"]
    readonly_fields = [
        "kind",
        "subject",
        "tenant_uuid",
        "severity",
        "status",
        "summary",
        "evidence_pretty",
        "first_seen",
        "last_seen",
        "resolved_at",
        "acknowledged_at",
        "acknowledged_by",
    ]
    exclude = ["evidence"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Incident | None = None) -> bool:
        return False  # the detail page is read-only; the actions change state through services

    @admin.display(description="kind", ordering="kind")
    def kind_label(self, obj: Incident) -> str:
        return obj.get_kind_display()

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj: Incident) -> SafeString:
        colour = {"critical": "#ba2121", "warning": "#b26b00"}.get(obj.severity, "#666")
        return format_html('<strong style="color:{}">{}</strong>', colour, obj.severity)

    @admin.display(description="tenant")
    def tenant(self, obj: Incident) -> str:
        if obj.tenant_uuid is None:
            return "fleet"
        return self._tenant_slugs().get(str(obj.tenant_uuid), str(obj.tenant_uuid)[:8])

    def _tenant_slugs(self) -> dict[str, str]:
        # One query per page, not one per row (tenant_uuid is no foreign key).
        if getattr(self, "_slugs", None) is None:
            self._slugs = {str(u): s for u, s in Tenant.objects.values_list("uuid", "slug")}
        return self._slugs

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._slugs = None
        return super().changelist_view(request, extra_context)

    @admin.display(description="summary")
    def summary_short(self, obj: Incident) -> SafeString | str:
        return shorten(obj.summary, 90)

    @admin.display(description="first seen", ordering="first_seen")
    def first(self, obj: Incident) -> SafeString | str:
        return short_time(obj.first_seen)

    @admin.display(description="last seen", ordering="last_seen")
    def last(self, obj: Incident) -> SafeString | str:
        return short_time(obj.last_seen)

    @admin.display(description="lasted")
    def lasted(self, obj: Incident) -> str:
        seconds = int(((obj.resolved_at or obj.last_seen) - obj.first_seen).total_seconds())
        return (
            f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
            if seconds >= 3600
            else f"{seconds // 60}m {seconds % 60:02d}s"
        )

    @admin.display(description="evidence")
    def evidence_pretty(self, obj: Incident) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(obj.evidence, indent=2, ensure_ascii=False, sort_keys=True))

    @admin.action(description="Acknowledge the selected incidents")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        done = self._each(request, queryset, services.incident_acknowledge)
        self.message_user(request, f"Acknowledged {done} incident(s).", messages.SUCCESS)

    @admin.action(description="Resolve the selected incidents")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        done = self._each(request, queryset, services.incident_resolve)
        self.message_user(request, f"Resolved {done} incident(s).", messages.SUCCESS)

    def _each(self, request: HttpRequest, queryset: QuerySet[Incident], change: Any) -> int:
        done, by = 0, request.user.get_username()
        for incident in queryset:
            try:
                change(incident=incident, by=by)
            except DomainError as exc:
                self.message_user(request, f"{incident}: {exc}", messages.WARNING)
            else:
                done += 1
        return done

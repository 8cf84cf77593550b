from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from gateway import services
from gateway.breakers import breaker_reset, breaker_states
from gateway.models import ROUTE_FIELDS, Route, RouteTarget, Upstream
from sentinel_site.errors import DomainError


class RouteTargetFormSet(forms.BaseInlineFormSet):
    """The route's targets as the admin edits them, held to the egress policy like the API's."""

    def clean(self) -> None:
        super().clean()
        urls = [
            form.cleaned_data["upstream"].url
            for form in self.forms
            if form.cleaned_data.get("upstream") is not None and not form.cleaned_data.get("DELETE")
        ]
        # The route the formset belongs to carries the tenant chosen in this very form.
        try:
            services.route_targets_check(tenant=self.instance.tenant, targets=urls)
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    formset = RouteTargetFormSet
    extra = 1
    autocomplete_fields = ["upstream"]
    fields = ["position", "upstream"]
    ordering = ["position"]


class RouteAdminForm(forms.ModelForm):
    class Meta:
        model = Route
        fields = ["tenant", *ROUTE_FIELDS]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if "path_prefix" in data:
                data["path_prefix"] = services.normalize_path_prefix(data["path_prefix"], tenant=data.get("tenant"))
            data["methods"] = services.normalize_methods(data.get("methods") or [])
        except DomainError as exc:
            field = next(iter(exc.details or {"path_prefix": None}))
            self.add_error(field, exc.message)
        return data


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteAdminForm
    list_display = ["name", "path_prefix", "tenant", "auth_mode", "target_list", "limits", "active", "updated_at"]
    list_filter = ["active", "auth_mode", "strip_prefix", "allow_tenant_header", "tenant__tier"]
    search_fields = ["name", "path_prefix", "tenant__slug", "route_targets__upstream__url"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    inlines = [RouteTargetInline]
    actions = ["activate", "deactivate", "test_live"]
    fieldsets = [
        (None, {"fields": ["name", "tenant", "path_prefix", "methods", "auth_mode", "strip_prefix", "active"]}),
        ("Limits (empty: the tenant's override, then the setting)", {
            "fields": ["burst_capacity", "refill_rate", "window_ms", "base_rate_limit", "timeout_ms", "max_body_bytes"]
        }),
        ("Tenancy", {"fields": ["allow_tenant_header"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).prefetch_related("route_targets__upstream")

    @admin.display(description="targets")
    def target_list(self, obj: Route) -> str:
        return ", ".join(obj.targets) or "— none: requests get 503"

    @admin.display(description="limits")
    def limits(self, obj: Route) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (("burst", obj.burst_capacity), ("rate", obj.base_rate_limit), ("window", obj.window_ms))
            if value is not None
        ]
        return ", ".join(parts) or "settings"

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # The proxies reload their route table when this version moves.
        transaction.on_commit(services.gateway_config_changed)

    def delete_model(self, request: HttpRequest, obj: Route) -> None:
        services.route_delete(route=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        for route in queryset:
            services.route_delete(route=route)

    @admin.action(description="Activate the selected routes")
    def activate(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        for route in queryset:
            services.route_update(route=route, active=True)
        self.message_user(request, f"Activated {queryset.count()} route(s).", messages.SUCCESS)

    @admin.action(description="Deactivate the selected routes (their paths answer 404)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        for route in queryset:
            services.route_update(route=route, active=False)
        self.message_user(request, f"Deactivated {queryset.count()} route(s).", messages.SUCCESS)

    @admin.action(description="Test the selected routes live (GET / on each target)")
    def test_live(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        for route in queryset[:20]:  # each target may take its timeout: keep the page bounded
            probes = services.route_probe(route=route)
            if not probes:
                self.message_user(request, f"{route.path_prefix}: no targets, requests get 503.", messages.WARNING)
                continue
            for probe in probes:
                answer = f"HTTP {probe.status}" if probe.status is not None else probe.error
                level = messages.SUCCESS if probe.healthy else messages.ERROR
                self.message_user(
                    request, f"{route.path_prefix} → {probe.target}: {answer} in {probe.latency_ms} ms", level
                )


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    list_display = ["url", "breaker", "route_count", "created_at"]
    actions = ["reset_breakers"]
    # Internal upstreams are usually plain http; say so rather than let Django guess.
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    search_fields = ["url", "routes__path_prefix"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Upstream]:
        return super().get_queryset(request).annotate(route_total=Count("routes", distinct=True))

    @admin.display(description="routes", ordering="route_total")
    def route_count(self, obj: Upstream) -> int:
        return obj.route_total  # type: ignore[attr-defined]

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        # One round trip for the whole page's breakers, not one per row.
        urls = [upstream.url for upstream in changelist.result_list]
        self._states = breaker_states(urls) if urls else {}
        return changelist

    @admin.display(description="breaker")
    def breaker(self, obj: Upstream) -> str:
        state = getattr(self, "_states", {}).get(obj.url)
        if state is None:
            return "?"
        return f"{state['state']} ({state['failures']}/{state['total']} failed)"

    @admin.action(description="Reset the breakers of the selected upstreams (force closed)")
    def reset_breakers(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        for upstream in queryset:
            breaker_reset(upstream=upstream.url)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).", messages.SUCCESS)

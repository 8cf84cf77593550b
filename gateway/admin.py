from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from accounts.admin_base import ServiceModelAdmin, changed_values, copy_saved, limits_text, short_time
from core.errors import DomainError
from gateway import services
from gateway.breaker_state import breaker_reset, breaker_states
from gateway.models import ROUTE_FIELDS, Route, Upstream

# Short names for the changelist column; the form keeps the full ones.
AUTH_LABELS = {"none": "public", "jwt": "JWT", "api_key": "key", "jwt_or_api_key": "JWT/key"}


class RouteAdminForm(forms.ModelForm):
    # The targets as the API takes them (URLs, in round-robin order), not as rows of another
    # table: the service validates and stores them, and tells the proxies.
    targets = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="One URL per line, in round-robin order.",
    )
    methods = forms.MultipleChoiceField(
        choices=[(method, method) for method in sorted(services.HTTP_METHODS)],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every method is allowed.",
    )

    class Meta:
        model = Route
        fields = ["tenant", *ROUTE_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial.setdefault("targets", "\n".join(self.instance.targets))

    def clean_targets(self) -> list[str]:
        urls = [line.strip() for line in self.cleaned_data["targets"].splitlines() if line.strip()]
        try:
            return services.normalize_targets(urls)
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if "path_prefix" in data:
                # On change the tenant is read-only, so not in the data: the route's own counts.
                tenant = data.get("tenant", self.instance.tenant)
                data["path_prefix"] = services.normalize_path_prefix(data["path_prefix"], tenant=tenant)
            data["methods"] = services.normalize_methods(data.get("methods") or [])
        except DomainError as exc:
            field = next(iter(exc.details or {"path_prefix": None}))
            self.add_error(field, exc.message)
        return data


@admin.register(Route)
class RouteAdmin(ServiceModelAdmin):
    form = RouteAdminForm
    list_display = ["name", "path_prefix", "tenant_slug", "auth", "target_list", "limits", "active", "updated"]
    list_filter = ["active", "auth_mode", "strip_prefix", "allow_tenant_header", "tenant__tier"]
    search_fields = ["name", "path_prefix", "tenant__slug", "route_targets__upstream__url"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    actions = ["activate", "deactivate", "test_live"]
    fieldsets = [
        (None, {
            "fields": ["name", "tenant", "path_prefix", "targets", "methods", "auth_mode", "strip_prefix", "active"]
        }),
        ("Limits (empty: the tenant's override, then the setting)", {
            "fields": ["burst_capacity", "refill_rate", "window_ms", "base_rate_limit", "timeout_ms", "max_body_bytes"]
        }),
        ("Tenancy", {"fields": ["allow_tenant_header"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).prefetch_related("route_targets__upstream")

    def get_readonly_fields(self, request: HttpRequest, obj: Route | None = None) -> list[str]:
        # A route stays in its tenant: its prefix lives under the tenant's slug.
        return ["tenant"] if obj is not None else []

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_slug(self, obj: Route) -> str:
        return obj.tenant.slug if obj.tenant else "platform"

    @admin.display(description="auth", ordering="auth_mode")
    def auth(self, obj: Route) -> str:
        return AUTH_LABELS.get(obj.auth_mode, obj.auth_mode)

    @admin.display(description="targets")
    def target_list(self, obj: Route) -> Any:
        targets = obj.targets
        if not targets:
            return "none: 503"
        more = f" +{len(targets) - 1}" if len(targets) > 1 else ""
        return format_html('<span title="{}">{}{}</span>', "\n".join(targets), urlsplit(targets[0]).netloc, more)

    @admin.display(description="limits")
    def limits(self, obj: Route) -> str:
        return limits_text(obj, inherited="tenant/settings")

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Route) -> Any:
        return short_time(obj.updated_at)

    def save_model(self, request: HttpRequest, obj: Route, form: forms.ModelForm, change: bool) -> None:
        # Through the services: prefix and targets validated as the API's are, and the proxies
        # reload their route table once the config version moves after the commit.
        data = form.cleaned_data
        if change:
            stored = Route.objects.get(pk=obj.pk)
            fields = changed_values(form, [name for name in ROUTE_FIELDS if name != "path_prefix"])
            if "path_prefix" in form.changed_data or data["path_prefix"] != stored.path_prefix:
                fields["path_prefix"] = data["path_prefix"]
            targets = data["targets"] if data["targets"] != stored.targets else None
            saved = services.route_update(route=stored, targets=targets, **fields)
        else:
            fields = {name: data[name] for name in ROUTE_FIELDS if name in data}
            saved = services.route_create(tenant=data.get("tenant"), targets=data["targets"], **fields)
        copy_saved(obj, saved)

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


def breaker_text(state: str, *, failures: int, total: int) -> str:
    """A breaker as a person reads it: `closed, 1 of 20 calls failed`, `half-open, no calls yet`,
    from the breaker's state name (`closed`, `open`, `half_open`) and its window's counts."""
    counts = f"{failures} of {total} calls failed" if total else "no calls yet"
    return f"{state.replace('_', '-')}, {counts}"


@admin.register(Upstream)
class UpstreamAdmin(ServiceModelAdmin):
    """Read-only: upstreams are made and changed as routes' targets (validated there). An unused
    one can be deleted; breakers can be reset."""

    list_display = ["url", "breaker", "route_count", "created"]
    actions = ["reset_breakers"]
    search_fields = ["url", "routes__path_prefix"]
    readonly_fields = ["url", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Upstream | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Upstream) -> None:
        services.upstream_delete(upstream=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        for upstream in queryset:
            services.upstream_delete(upstream=upstream)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Upstream]:
        return super().get_queryset(request).annotate(route_total=Count("routes", distinct=True))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Upstream) -> Any:
        return short_time(obj.created_at)

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
        return breaker_text(state["state"], failures=state["failures"], total=state["total"])

    @admin.action(description="Reset the breakers of the selected upstreams (force closed)")
    def reset_breakers(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        for upstream in queryset:
            breaker_reset(upstream=upstream.url)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).", messages.SUCCESS)

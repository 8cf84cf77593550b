"""The monitors admin: monitors (state, last check, 24 h uptime, actions), their latest results
and flips inline, maintenance windows, and the check results, read-only.

A client of the services like the API: monitors and maintenance windows are saved and deleted
through them, so the admin refuses what the API refuses (``ServiceModelAdmin`` shows a refusal
on its field); the actions call them too. Check results and flips are the scheduler's records.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin_base import ServiceModelAdmin, changed_values, copy_saved, short_time, shorten
from core.errors import DomainError
from monitors import selectors, services
from monitors.models import CheckResult, Flip, MaintenanceWindow, Monitor, MonitorState

# The colours of the states in the list: what an operator scans for first.
STATE_COLOURS = {
    MonitorState.UP: "#1a7f37",
    MonitorState.DOWN: "#cf222e",
    MonitorState.MAINTENANCE: "#0969da",
    MonitorState.PAUSED: "#6e7781",
    MonitorState.UNKNOWN: "#6e7781",
}
INLINE_ROWS = 20
RESULT_COLUMNS: tuple[str, ...] = (
    "checked_at", "outcome", "status_code", "latency_ms", "reason", "failed_condition", "cert_expiry_days",
)  # fmt: skip
FLIP_COLUMNS: tuple[str, ...] = ("created_at", "old_state", "new_state", "reason", "processed_at", "held_by")
RUN_STATE_COLUMNS: tuple[str, ...] = (
    "state", "state_changed_at", "last_checked_at", "last_outcome", "last_reason", "last_latency_ms",
    "cert_expires_at", "next_due_at", "version", "created_at", "updated_at",
)  # fmt: skip
WINDOW_COLUMNS: tuple[str, ...] = (
    "tenant",
    "name",
    "monitor",
    "starts_at",
    "duration_minutes",
    "recurrence",
    "timezone",
)


@admin.display(description="tenant", ordering="tenant__slug")
def tenant_slug(obj: Any) -> SafeString:
    return _nowrap(obj.tenant.slug)


def _nowrap(text: str) -> SafeString:
    # Narrow columns at 1280 px would otherwise break words in the middle ("maintenan ce").
    return format_html('<span style="white-space: nowrap">{}</span>', text)


# --- monitors ----------------------------------------------------------------------------------------


class MonitorAdminForm(forms.ModelForm):
    # Not stripped: the line and column of a condition's error point into the text as typed.
    conditions = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "style": "font-family: monospace"}),
        help_text='Rules DSL, e.g. status == 200 and response_time < 300 and body.status == "UP"',
    )
    body = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))

    class Meta:
        model = Monitor
        widgets = {
            "target": forms.TextInput(attrs={"size": 80}),
            "headers": forms.Textarea(attrs={"rows": 2, "cols": 80, "style": "font-family: monospace"}),
            "expected_status": forms.Textarea(attrs={"rows": 1, "cols": 40, "style": "font-family: monospace"}),
        }
        fields = [
            "tenant", "name", "kind", "target", "method", "headers", "body", "expected_status", "keyword",
            "keyword_absent", "max_latency_ms", "conditions", "follow_redirects", "verify_tls", "timeout_seconds",
            "interval_seconds", "failure_threshold", "success_threshold", "reminder_interval_seconds",
            "cert_expiry_warning_days", "channels", "depends_on", "enabled", "published",
        ]  # fmt: skip


# The form's fields the services take, by their service names.
_SERVICE_FIELDS = [name for name in MonitorAdminForm.Meta.fields if name != "tenant"]


def _service_values(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The form's cleaned values as the services take them: channels as a list, an emptied JSON
    field as its empty value."""
    values = {name: data[name] for name in names if name in data}
    if "channels" in values:
        values["channels"] = list(values["channels"])
    if "headers" in values and values["headers"] in (None, ""):
        values["headers"] = {}
    if "expected_status" in values and values["expected_status"] in (None, ""):
        values["expected_status"] = []
    return values


class _LatestFormSet(BaseInlineFormSet):
    """Only the newest INLINE_ROWS rows: a monitor checked every 10 s has 8,640 results a day."""

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:INLINE_ROWS]
        return self._latest


class _ReadOnlyInline(admin.TabularInline):
    formset = _LatestFormSet
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CheckResultInline(_ReadOnlyInline):
    model = CheckResult
    verbose_name_plural = f"latest {INLINE_ROWS} check results"
    fields = RESULT_COLUMNS
    readonly_fields = RESULT_COLUMNS


class FlipInline(_ReadOnlyInline):
    model = Flip
    fk_name = "monitor"
    verbose_name_plural = f"latest {INLINE_ROWS} state flips"
    fields = FLIP_COLUMNS
    readonly_fields = FLIP_COLUMNS


class MonitorChangeList(ChangeList):
    """Fetches the page's 24 h uptime in one query (``selectors.uptime_24h_of``), not one a row."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        figures = selectors.uptime_24h_of([monitor.pk for monitor in self.result_list], now=timezone.now())
        for monitor in self.result_list:
            monitor.uptime_24h = figures.get(monitor.pk)


@admin.register(Monitor)
class MonitorAdmin(ServiceModelAdmin):
    form = MonitorAdminForm
    list_display = ["name", tenant_slug, "kind_code", "state_badge", "last_check", "uptime_24h", "interval"]
    list_filter = ["state", "kind", "enabled", "published", ("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "target"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    raw_id_fields = ["depends_on"]
    filter_horizontal = ["channels"]
    inlines = [CheckResultInline, FlipInline]
    actions = ["check_now", "pause", "resume"]
    readonly_fields = RUN_STATE_COLUMNS
    fieldsets = [
        (None, {"fields": ["tenant", "name", "kind", "target", "enabled", "published"]}),
        (
            "Check",
            {
                "fields": [
                    "method",
                    "headers",
                    "body",
                    "expected_status",
                    "keyword",
                    "keyword_absent",
                    "max_latency_ms",
                    "conditions",
                    "follow_redirects",
                    "verify_tls",
                    "timeout_seconds",
                ]
            },
        ),
        (
            "Schedule and alerts",
            {
                "fields": [
                    "interval_seconds",
                    "failure_threshold",
                    "success_threshold",
                    "reminder_interval_seconds",
                    "cert_expiry_warning_days",
                    "channels",
                    "depends_on",
                ]
            },
        ),
        ("Run state", {"fields": RUN_STATE_COLUMNS}),
    ]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MonitorChangeList

    def get_readonly_fields(self, request: HttpRequest, obj: Monitor | None = None) -> list[str]:
        # A monitor stays in its tenant: its channels, results and flips belong there.
        return [*self.readonly_fields, "tenant"] if obj is not None else list(self.readonly_fields)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and "channels" in form_class.base_fields:
            # Only the monitor's tenant's channels can be chosen (the service refuses others anyway).
            channels = form_class.base_fields["channels"]
            channels.queryset = channels.queryset.filter(tenant_id=obj.tenant_id)
        return form_class

    def save_model(self, request: HttpRequest, obj: Monitor, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        try:
            if change:
                stored = Monitor.objects.get(pk=obj.pk)
                names = list(changed_values(form, _SERVICE_FIELDS))
                saved = services.monitor_update(monitor=stored, **_service_values(data, names))
            else:
                saved = services.monitor_create(tenant=data["tenant"], **_service_values(data, _SERVICE_FIELDS))
        except DomainError as error:
            if error.code != "egress_denied":
                raise
            # Its details are the address and the rule (the API's shape), not {field: [messages]}:
            # put the message on the target field, where ServiceModelAdmin shows refusals.
            raise DomainError(error.message, details={"target": [error.message]}, code=error.code) from None
        copy_saved(obj, saved)

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        # Not form.save_m2m(): the channels went through the service in save_model. The read-only
        # inlines save nothing, but the change message reads what their save() records.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: Monitor) -> None:
        services.monitor_delete(monitor=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Monitor]) -> None:
        for monitor in queryset:
            services.monitor_delete(monitor=monitor)

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Monitor) -> SafeString:
        colour = STATE_COLOURS.get(MonitorState(obj.state), "#6e7781")
        return format_html('<strong style="color: {}; white-space: nowrap">{}</strong>', colour, obj.state)

    @admin.display(description="kind", ordering="kind")
    def kind_code(self, obj: Monitor) -> str:
        return obj.kind

    @admin.display(description="last check", ordering="last_checked_at")
    def last_check(self, obj: Monitor) -> SafeString | str:
        if obj.last_checked_at is None:
            return "—"
        reason = shorten(obj.last_reason, 48) if obj.last_reason else ""
        return format_html("{} {} {}", _nowrap(short_time(obj.last_checked_at)), obj.last_outcome, reason)

    @admin.display(description="uptime 24 h")
    def uptime_24h(self, obj: Monitor) -> SafeString:
        figure = getattr(obj, "uptime_24h", None)
        return _nowrap("—" if figure is None else f"{figure:.2f} %")

    @admin.display(description="interval", ordering="interval_seconds")
    def interval(self, obj: Monitor) -> str:
        return f"{obj.interval_seconds} s"

    @admin.action(description="Check the selected monitors now")
    def check_now(self, request: HttpRequest, queryset: QuerySet[Monitor]) -> None:
        count = services.monitors_check_now(monitors=queryset)
        skipped = queryset.count() - count
        text = f"{count} monitor(s) will be checked within a second."
        if skipped:
            text += f" {skipped} paused one(s) skipped: resume them first."
        self.message_user(request, text, messages.SUCCESS)

    @admin.action(description="Pause the selected monitors")
    def pause(self, request: HttpRequest, queryset: QuerySet[Monitor]) -> None:
        count = services.monitors_pause(monitors=queryset)
        self.message_user(request, f"{count} monitor(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume the selected monitors")
    def resume(self, request: HttpRequest, queryset: QuerySet[Monitor]) -> None:
        count = services.monitors_resume(monitors=queryset)
        self.message_user(request, f"{count} monitor(s) resumed.", messages.SUCCESS)


# --- maintenance windows -------------------------------------------------------------------------------


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(ServiceModelAdmin):
    list_display = ["name", tenant_slug, "scope", "starts", "duration_minutes", "recurrence", "timezone"]
    list_filter = ["recurrence", ("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "monitor__name"]
    list_select_related = ["tenant", "monitor"]
    autocomplete_fields = ["tenant"]
    raw_id_fields = ["monitor"]
    fields = WINDOW_COLUMNS

    def get_readonly_fields(self, request: HttpRequest, obj: MaintenanceWindow | None = None) -> list[str]:
        return ["tenant"] if obj is not None else []

    @admin.display(description="monitor")
    def scope(self, obj: MaintenanceWindow) -> str:
        return obj.monitor.name if obj.monitor is not None else "every monitor"

    @admin.display(description="starts", ordering="starts_at")
    def starts(self, obj: MaintenanceWindow) -> Any:
        return short_time(obj.starts_at)

    def save_model(self, request: HttpRequest, obj: MaintenanceWindow, form: forms.ModelForm, change: bool) -> None:
        names = [name for name in WINDOW_COLUMNS if name != "tenant"]
        data = form.cleaned_data
        if change:
            stored = MaintenanceWindow.objects.get(pk=obj.pk)
            saved = services.maintenance_window_update(window=stored, **changed_values(form, names))
        else:
            values = {name: data[name] for name in names if name in data}
            saved = services.maintenance_window_create(tenant=data["tenant"], **values)
        copy_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: MaintenanceWindow) -> None:
        services.maintenance_window_delete(window=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MaintenanceWindow]) -> None:
        for window in queryset:
            services.maintenance_window_delete(window=window)


# --- check results ---------------------------------------------------------------------------------------


@admin.register(CheckResult)
class CheckResultAdmin(admin.ModelAdmin):
    """Read-only: results are the scheduler's record. Deleting stays possible (retention deletes
    them anyway, and deleting a monitor deletes its results: the admin asks for this permission)."""

    list_display = ["checked", "monitor", "outcome", "status_code", "latency", "short_reason"]
    list_filter = ["outcome"]
    # Exact monitor name only: a LIKE over the biggest table of the app would scan it.
    search_fields = ["=monitor__name"]
    list_select_related = ["monitor"]
    show_full_result_count = False  # a COUNT(*) over every result on each page load is too dear
    raw_id_fields = ["monitor"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="checked", ordering="checked_at")
    def checked(self, obj: CheckResult) -> Any:
        return short_time(obj.checked_at)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: CheckResult) -> str:
        return "—" if obj.latency_ms is None else f"{obj.latency_ms:.0f} ms"

    @admin.display(description="reason")
    def short_reason(self, obj: CheckResult) -> SafeString | str:
        return shorten(obj.failed_condition or obj.reason, 60)


class FlipHeldFilter(admin.SimpleListFilter):
    title = "held"
    parameter_name = "held"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "held by a parent's outage"), ("no", "not held")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.filter(held_by__isnull=False)
        if self.value() == "no":
            return queryset.filter(held_by__isnull=True)
        return queryset


@admin.register(Flip)
class FlipAdmin(admin.ModelAdmin):
    """Read-only: the state changes the scheduler recorded, and whether their alert went out
    (processed) or was held by a parent's outage. Deleting stays possible for the same reason as
    results (deleting a monitor deletes its flips)."""

    list_display = ["created", "monitor", "tenant", "change", "short_reason", "processed", "held_by"]
    list_filter = ["new_state", "old_state", FlipHeldFilter, "tenant"]
    search_fields = ["=monitor__name"]
    list_select_related = ["monitor", "tenant"]
    show_full_result_count = False
    raw_id_fields = ["monitor", "held_by"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="when", ordering="created_at")
    def created(self, obj: Flip) -> Any:
        return short_time(obj.created_at)

    @admin.display(description="change")
    def change(self, obj: Flip) -> str:
        return f"{obj.old_state} → {obj.new_state}"

    @admin.display(description="reason")
    def short_reason(self, obj: Flip) -> SafeString | str:
        return shorten(obj.reason, 60)

    @admin.display(description="processed", ordering="processed_at")
    def processed(self, obj: Flip) -> Any:
        return short_time(obj.processed_at) if obj.processed_at else "pending"

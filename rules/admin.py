"""The rules admin: events, rules (with DSL validation and a dry run), channels, matches, deliveries.

A client of the services like the API: rules and channels are saved and deleted through them,
actions call them, and the channel secret is write-only here as well. Events, matches and
deliveries are records the services write; staff may only delete them, which no invariant
depends on (a deleted delivery's claim simply finds no row).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin_base import ServiceModelAdmin, copy_saved, short_time, shorten
from core.errors import DomainError
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, NotificationChannel, Rule, RuleMatch


@admin.display(description="tenant", ordering="tenant__slug")
def tenant_slug(obj: Any) -> str:
    return str(obj.tenant.slug)


# --- events ------------------------------------------------------------------------------------


class EvaluatedFilter(admin.SimpleListFilter):
    title = "evaluated"
    parameter_name = "evaluated"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Evaluated"), ("no", "Waiting for evaluation")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        if self.value() == "yes":
            return queryset.filter(evaluated_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(evaluated_at__isnull=True)
        return queryset


def _pretty_json(value: Any) -> SafeString:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Read-mostly: events arrive through the API or the stream; staff look and may delete."""

    list_display = ["received", tenant_slug, "type", "source", "evaluated"]
    list_filter = ["source", EvaluatedFilter, "tenant__tier"]
    # Exact type only: a LIKE over the biggest table of the app would scan it.
    search_fields = ["=type"]
    list_select_related = ["tenant"]
    show_full_result_count = False  # a COUNT(*) over every event on each page load is too dear
    readonly_fields = ("tenant", "type", "source", "received_at", "evaluated_at", "pretty_payload")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="received", ordering="received_at")
    def received(self, obj: Event) -> Any:
        return short_time(obj.received_at)

    @admin.display(description="evaluated", boolean=True, ordering="evaluated_at")
    def evaluated(self, obj: Event) -> bool:
        return obj.evaluated_at is not None

    @admin.display(description="payload")
    def pretty_payload(self, obj: Event) -> SafeString:
        return _pretty_json(obj.payload)


# --- rules -------------------------------------------------------------------------------------


def _dsl_error_text(exc: DomainError) -> str:
    """The service's message with the position, once (some messages already carry it)."""
    position = (exc.details or {}).get("dsl") or {}
    line, column = position.get("line"), position.get("column")
    if line is None or f"line {line}" in exc.message:
        return exc.message
    return f"{exc.message} (line {line}, column {column})"


class RuleAdminForm(forms.ModelForm):
    dsl = forms.CharField(
        label="DSL",
        widget=forms.Textarea(attrs={"rows": 6, "cols": 100, "style": "font-family: monospace"}),
        strip=False,  # the error's line and column point into the text as typed
        help_text='e.g. when type == "order" and amount > 500 then notify("slack:#big-orders")',
    )

    class Meta:
        model = Rule
        fields = ["tenant", "name", "dsl", "enabled", "cooldown_seconds"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # On change the tenant is read-only, so Django's own check of (tenant, name) skips it.
        if self.instance.pk is not None and "name" in data:
            taken = Rule.objects.filter(tenant_id=self.instance.tenant_id, name=data["name"])
            if taken.exclude(pk=self.instance.pk).exists():
                self.add_error("name", "This tenant already has a rule with this name.")
        return data

    def clean_dsl(self) -> str:
        dsl = self.cleaned_data["dsl"]
        try:
            services.rule_validate(dsl)
        except services.RuleInvalid as exc:
            raise forms.ValidationError(_dsl_error_text(exc)) from None
        return dsl


class DryRunForm(forms.Form):
    event = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "style": "font-family: monospace"}),
        initial='{"type": "order", "amount": 900}',
        help_text="A JSON object, as it would be sent to POST /events. Windows see only this event.",
    )

    def clean_event(self) -> dict[str, Any]:
        try:
            event = json.loads(self.cleaned_data["event"])
        except (ValueError, RecursionError) as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        # The services' own check, so the form shows the problem next to the field.
        problem = services.event_problem(payload=event)
        if problem is not None:
            raise forms.ValidationError(problem)
        return event


@admin.register(Rule)
class RuleAdmin(ServiceModelAdmin):
    form = RuleAdminForm
    list_display = ["name", tenant_slug, "enabled", "cooldown", "version", "updated"]
    list_filter = ["enabled", "tenant__tier"]
    search_fields = ["name", "tenant__slug", "dsl"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    readonly_fields = ["version", "dry_run_link", "created_at", "updated_at"]
    fields = ["tenant", "name", "dsl", "enabled", "cooldown_seconds", "version", "dry_run_link", "updated_at"]
    actions = ["enable", "disable"]

    def get_readonly_fields(self, request: HttpRequest, obj: Rule | None = None) -> list[str]:
        # A rule stays in its tenant: its windows and matches belong there.
        return [*self.readonly_fields, "tenant"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Rule, form: forms.ModelForm, change: bool) -> None:
        data = {field: form.cleaned_data[field] for field in ("name", "dsl", "enabled", "cooldown_seconds")}
        if change:
            # The form already copied the new values onto `obj`: the service compares the DSL with
            # the stored one to decide whether the version moves.
            stored = Rule.objects.get(pk=obj.pk)
            saved = services.rule_update(rule=stored, **{k: v for k, v in data.items() if k in form.changed_data})
        else:
            saved = services.rule_create(tenant=form.cleaned_data["tenant"], **data)
        copy_saved(obj, saved)

    @admin.display(description="cooldown", ordering="cooldown_seconds")
    def cooldown(self, obj: Rule) -> str:
        return f"{obj.cooldown_seconds} s"

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Rule) -> Any:
        return short_time(obj.updated_at)

    def delete_model(self, request: HttpRequest, obj: Rule) -> None:
        services.rule_delete(rule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        for rule in queryset:
            services.rule_delete(rule=rule)

    @admin.display(description="dry run")
    def dry_run_link(self, obj: Rule | None) -> str:
        if obj is None or obj.pk is None:
            return "Save the rule first."
        url = reverse("admin:rules_rule_dry_run", args=[obj.pk])
        return format_html('<a href="{}">Try this rule against a sample event</a>', url)

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<path:object_id>/dry-run/",
                self.admin_site.admin_view(self.dry_run_view),
                name="rules_rule_dry_run",
            )
        ]
        return extra + super().get_urls()

    def dry_run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Paste a JSON event, see whether the stored rule matches it and what it would send."""
        rule = self.get_object(request, object_id)
        if rule is None:
            raise Http404("No such rule.")
        if not self.has_view_permission(request, rule):
            raise PermissionDenied
        form = DryRunForm(request.POST or None)
        result: services.DryRunResult | None = None
        error = ""
        if request.method == "POST" and form.is_valid():
            try:
                result = services.rule_dry_run(rule=rule, payload=form.cleaned_data["event"])
            except services.RuleEvaluationFailed as exc:
                # Staff see the rule's own error, which the API keeps to the log.
                cause = exc.__cause__
                error = f"The rule failed on this event: {type(cause).__name__}: {cause}"
            except DomainError as exc:
                error = _dsl_error_text(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Dry run: {rule}",
            "opts": self.opts,
            "rule": rule,
            "form": form,
            "result": result,
            "error": error,
        }
        return TemplateResponse(request, "admin/rules/rule/dry_run.html", context)

    @admin.action(description="Enable the selected rules")
    def enable(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        count = services.rule_set_enabled(rules=queryset, enabled=True)
        self.message_user(request, f"Enabled {count} rule(s).", messages.SUCCESS)

    @admin.action(description="Disable the selected rules")
    def disable(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        count = services.rule_set_enabled(rules=queryset, enabled=False)
        self.message_user(request, f"Disabled {count} rule(s).", messages.SUCCESS)


# --- channels ----------------------------------------------------------------------------------


class ChannelAdminForm(forms.ModelForm):
    # Not a model field of the form: left empty, it must keep the stored secret, and the widget
    # never renders it back into the page.
    new_secret = forms.CharField(
        label="Secret",
        required=False,
        strip=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False),
        help_text="Signs webhook bodies (HMAC-SHA256). Leave empty to keep the current one.",
    )
    clear_secret = forms.BooleanField(required=False, help_text="Remove the current secret.")

    class Meta:
        model = NotificationChannel
        fields = ["tenant", "kind", "name", "target", "active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # On change the tenant is read-only, so Django's own check of (tenant, kind, name) skips it.
        if self.instance.pk is not None and data.get("kind") and data.get("name"):
            taken = NotificationChannel.objects.filter(
                tenant_id=self.instance.tenant_id, kind=data["kind"], name=data["name"]
            )
            if taken.exclude(pk=self.instance.pk).exists():
                self.add_error("name", "This tenant already has a channel of this kind with this name.")
        tenant = self.instance.tenant if self.instance.pk is not None else data.get("tenant")
        if data.get("kind") and data.get("target") and tenant is not None:
            try:
                # The services' own check (shape, then egress policy), so the form says what they would.
                services.channel_target_check(tenant=tenant, kind=data["kind"], target=data["target"])
            except DomainError as exc:
                self.add_error("target", exc.message)
        return data


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ServiceModelAdmin):
    form = ChannelAdminForm
    list_display = ["label", tenant_slug, "short_target", "has_secret", "active", "created"]
    list_filter = ["kind", "active", "tenant__tier"]
    search_fields = ["name", "target", "tenant__slug"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    fields = ["tenant", "kind", "name", "target", "new_secret", "clear_secret", "active"]

    def get_readonly_fields(self, request: HttpRequest, obj: NotificationChannel | None = None) -> list[str]:
        return ["tenant"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: NotificationChannel, form: forms.ModelForm, change: bool) -> None:
        data = {field: form.cleaned_data[field] for field in ("kind", "name", "target")}
        secret = form.cleaned_data["new_secret"]
        if change:
            fields: dict[str, Any] = {**data, "active": form.cleaned_data["active"]}
            if secret:
                fields["secret"] = secret
            elif form.cleaned_data["clear_secret"]:
                fields["secret"] = ""
            saved = services.channel_update(channel=NotificationChannel.objects.get(pk=obj.pk), **fields)
        else:
            saved = services.channel_create(
                tenant=form.cleaned_data["tenant"], secret=secret, active=form.cleaned_data["active"], **data
            )
        copy_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: NotificationChannel) -> None:
        services.channel_delete(channel=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[NotificationChannel]) -> None:
        for channel in queryset:
            services.channel_delete(channel=channel)

    @admin.display(description="channel", ordering="name")
    def label(self, obj: NotificationChannel) -> str:
        return f"{obj.kind}:{obj.name}"

    @admin.display(description="target", ordering="target")
    def short_target(self, obj: NotificationChannel) -> Any:
        return shorten(obj.target, 60)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: NotificationChannel) -> Any:
        return short_time(obj.created_at)

    @admin.display(description="secret", boolean=True)
    def has_secret(self, obj: NotificationChannel) -> bool:
        return bool(obj.secret)


# --- matches and deliveries --------------------------------------------------------------------


@admin.register(RuleMatch)
class RuleMatchAdmin(admin.ModelAdmin):
    """Read-only: matches are facts recorded by the evaluation."""

    list_display = ["matched", "rule", tenant_slug, "event_ref", "group", "suppressed", "problem_list"]
    list_filter = ["suppressed", ("rule", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=group_key", "rule__name"]
    list_select_related = ["rule", "tenant"]
    show_full_result_count = False
    readonly_fields = ("tenant", "rule", "event", "group_key", "matched_at", "suppressed", "problems")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RuleMatch | None = None) -> bool:
        return False

    @admin.display(description="matched", ordering="matched_at")
    def matched(self, obj: RuleMatch) -> Any:
        return short_time(obj.matched_at)

    @admin.display(description="event", ordering="event_id")
    def event_ref(self, obj: RuleMatch) -> str:
        return f"#{obj.event_id}"

    @admin.display(description="group", ordering="group_key")
    def group(self, obj: RuleMatch) -> Any:
        return shorten(obj.group_key, 30) or "—"

    @admin.display(description="problems")
    def problem_list(self, obj: RuleMatch) -> Any:
        return shorten("; ".join(obj.problems), 60) if obj.problems else "—"


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created", "status", "attempts", "channel", tenant_slug, "about", "next_attempt", "short_error"]
    list_filter = ["status", "channel__kind", "tenant__tier"]
    search_fields = ["channel__name", "last_error", "source_ref", "title"]
    list_select_related = ["channel", "tenant"]
    show_full_result_count = False
    # Read-only: state moves through the workers' claims and the resend action, never by hand.
    readonly_fields = (
        "tenant",
        "match",
        "source_ref",
        "title",
        "channel",
        "status",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "sent_at",
        "last_error",
        "message",
        "context",
        "created_at",
    )
    fields = readonly_fields
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Delivery) -> Any:
        return short_time(obj.created_at)

    @admin.display(description="about")
    def about(self, obj: Delivery) -> Any:
        # A rule's delivery names its match; a notification no rule produced (a monitor's
        # alert) has no match and says what it is about instead.
        if obj.match_id is not None:
            return f"match #{obj.match_id}"
        return shorten(obj.title or obj.source_ref, 40) or "—"

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj: Delivery) -> Any:
        # Only a delivery that will be tried again has a next attempt worth showing.
        if obj.status not in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
            return "—"
        return short_time(obj.next_attempt_at)

    @admin.display(description="last error")
    def short_error(self, obj: Delivery) -> Any:
        return shorten(obj.last_error, 60) or "—"

    @admin.action(description="Resend the selected deliveries (failed or dead ones)")
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        resent = services.delivery_resend(deliveries=queryset)
        skipped = queryset.count() - len(resent)
        text = f"Re-queued {len(resent)} delivery(ies)."
        if skipped:
            text += f" {skipped} skipped: only failed or dead deliveries are resent."
        self.message_user(request, text, messages.SUCCESS if resent else messages.WARNING)

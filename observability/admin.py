"""The observability admin: the workers' heartbeat, and the request log (read-only, for tables of
millions of rows).

The request log's changelist runs no COUNT: its paginator fetches one row past the page instead
(``PeekPaginator``), its filters take their choices from code rather than from `SELECT DISTINCT`,
its date hierarchy probes the time index period by period (``TimeProbingQuerySet``), and its
search picks the one indexed column a term can mean.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Max, Min, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin_base import short_time, shorten
from accounts.models import Tenant, Tier
from core.errors import DomainError
from observability import services
from observability.models import Heartbeat, Incident, IncidentStatus, RequestLog


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


# --- the request log: paging, dates and filters without a full scan --------------------------------


class PeekPaginator(Paginator):
    """A paginator that never counts: it reads the page asked for plus one row, and reports as
    many rows as it has seen, so the admin links one page further while there is more.

    `count` is therefore "at least": the request log's pagination template says "older" instead of
    a total. ``page_number`` is the page the request asks for (the admin's `p`, from 1).
    """

    def __init__(self, object_list: Any, per_page: int, *, page_number: int) -> None:
        super().__init__(object_list, per_page)
        self.page_number = page_number

    @cached_property
    def _window(self) -> list[Any]:
        offset = (self.page_number - 1) * self.per_page
        return list(self.object_list[offset : offset + self.per_page + 1])

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        return (self.page_number - 1) * self.per_page + len(self._window)

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        if number == self.page_number:  # the rows are already here: no second query
            return self._get_page(self._window[: self.per_page], number, self)
        return super().page(number)


class TimeProbingQuerySet(QuerySet[RequestLog]):
    """The date hierarchy's `datetimes()` without `SELECT DISTINCT date_trunc(...)` over every row
    of the period: one `EXISTS` per year, month or day between the first and last row, each an
    index probe on `time` (a month holds at most 31 of them, however many millions of rows)."""

    def datetimes(self, field_name: str, kind: str, order: str = "ASC", tzinfo: Any = None) -> Any:
        if field_name != "time" or kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min("time"), last=Max("time"))
        if bounds["first"] is None:
            return []
        zone = tzinfo or timezone.get_current_timezone()
        first, last = (timezone.localtime(bounds[end], zone) for end in ("first", "last"))
        starts = _period_starts(first, last, kind)
        found = [start for start, end in itertools.pairwise(starts) if self._any_between(start, end)]
        return found if order == "ASC" else found[::-1]

    def _any_between(self, start: datetime, end: datetime) -> bool:
        return self.filter(time__gte=start, time__lt=end).order_by().exists()


def _period_starts(first: datetime, last: datetime, kind: str) -> list[datetime]:
    """The starts of every `kind` period from the one holding `first` to the one after `last`, in
    `first`'s time zone (a day is a local day, as the admin's links mean it)."""
    zone = first.tzinfo
    start = first.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    start = start.replace(day=1) if kind != "day" else start
    starts = [start.replace(month=1) if kind == "year" else start]
    end = last.replace(tzinfo=None)
    while starts[-1] <= end:
        starts.append(_next_period(starts[-1], kind))
    return [timezone.make_aware(moment, zone) for moment in starts]


def _next_period(start: datetime, kind: str) -> datetime:
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


class StatusClassFilter(admin.SimpleListFilter):
    title = "status class"
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("2", "2xx success"), ("3", "3xx redirect"), ("4", "4xx client error"), ("5", "5xx server error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        value = self.value()
        if value not in ("2", "3", "4", "5"):
            return queryset
        hundreds = int(value) * 100
        return queryset.filter(status__gte=hundreds, status__lt=hundreds + 100)


class TierFilter(admin.SimpleListFilter):
    """The tiers from code: Django's default filter on a plain column would `SELECT DISTINCT tier`
    over the whole table on every page load."""

    title = "tier"
    parameter_name = "tier"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in Tier.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        return queryset.filter(tier=self.value()) if self.value() in Tier.values else queryset


# (parameter, label, age): the windows an operator looks at during an incident.
RECENT_WINDOWS = [
    ("15m", "last 15 minutes", timedelta(minutes=15)),
    ("1h", "last hour", timedelta(hours=1)),
    ("24h", "last 24 hours", timedelta(days=1)),
    ("7d", "last 7 days", timedelta(days=7)),
]


class RecentFilter(admin.SimpleListFilter):
    title = "time"
    parameter_name = "recent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, label, _age in RECENT_WINDOWS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        ages = {key: age for key, _label, age in RECENT_WINDOWS}
        age = ages.get(self.value() or "")
        return queryset.filter(time__gte=timezone.now() - age) if age is not None else queryset


# --- the request log's admin --------------------------------------------------------------------------


def request_log_search(queryset: QuerySet[RequestLog], term: str) -> QuerySet[RequestLog]:
    """What a search term means, each on an indexed column: an IP address is a client IP; a term
    starting with "/" a path prefix (read newest first along the time index); anything else a
    correlation id, matched exactly."""
    term = term.strip()
    if not term or "\x00" in term:
        return queryset.none() if term else queryset
    try:
        return queryset.filter(client_ip=str(ipaddress.ip_address(term)))
    except ValueError:
        pass
    if term.startswith("/"):
        return queryset.filter(path__startswith=term[:2000])
    return queryset.filter(correlation_id=term[:128])


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    """Read-only: rows come from the request-log writer, never from a person."""

    list_display = ["when", "method", "short_path", "status", "outcome", "tenant", "route", "client", "latency"]
    list_display_links = ["when"]
    list_filter = ["decision", StatusClassFilter, TierFilter, RecentFilter]
    date_hierarchy = "time"
    search_fields = ["correlation_id"]  # shows the box; request_log_search decides what a term means
    search_help_text = "An IP address (client), a path starting with / (prefix), or a correlation ID (exact)."
    # Sorting by any other column would sort every matching row before showing the first 100.
    sortable_by = ["when"]
    list_per_page = 100
    list_max_show_all = 0  # "Show all" would read millions of rows
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice
    fieldsets = [
        ("Request", {"fields": ["moment", "method", "path", "status", "decision", "reason", "latency"]}),
        ("Caller", {"fields": ["tenant", "tenant_uuid", "tenant_key", "tier", "principal", "client", "user_agent"]}),
        (
            "Route and upstream",
            {"fields": ["route_ref", "upstream", "upstream_latency", "bytes_in", "bytes_out", "breaker_transition"]},
        ),
        ("Tracing", {"fields": ["correlation", "trace"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RequestLog]:
        base = super().get_queryset(request)
        queryset = TimeProbingQuerySet(model=RequestLog, query=base.query.chain(), using=base.db)
        # Tenants are named by their slug; the subquery runs for the rows of the page only.
        slug = Tenant.objects.filter(uuid=OuterRef("tenant_uuid")).values("slug")[:1]
        return queryset.annotate(tenant_slug=Subquery(slug))

    def get_paginator(self, request: HttpRequest, queryset: Any, per_page: int, *args: Any, **kwargs: Any) -> Any:
        raw = request.GET.get("p", "1")
        page = int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 10**6 else 1
        return PeekPaginator(queryset, per_page, page_number=page)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RequestLog], search_term: str
    ) -> tuple[QuerySet[RequestLog], bool]:
        return request_log_search(queryset, search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retention drops whole partitions; single rows are evidence

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for _title, options in self.fieldsets for name in options["fields"]]

    # --- columns and read-only fields ---

    @admin.display(description="time", ordering="time")
    def when(self, obj: RequestLog) -> SafeString:
        local = timezone.localtime(obj.time)
        return format_html('<span title="{}">{}</span>', local.isoformat(), local.strftime("%d %b %H:%M:%S"))

    @admin.display(description="path")
    def short_path(self, obj: RequestLog) -> SafeString | str:
        return shorten(obj.path, 48)

    @admin.display(description="decision")
    def outcome(self, obj: RequestLog) -> str:
        """`limited (tenant_rate)`: the decision, and its reason when the reason says more."""
        return f"{obj.decision} ({obj.reason})" if obj.reason and obj.reason != obj.decision else obj.decision

    @admin.display(description="time")
    def moment(self, obj: RequestLog) -> str:
        """To the millisecond, with the offset: what one compares with other logs and traces."""
        return timezone.localtime(obj.time).isoformat(sep=" ", timespec="milliseconds")

    @admin.display(description="tenant")
    def tenant(self, obj: RequestLog) -> str:
        slug = getattr(obj, "tenant_slug", None)
        if slug:
            return str(slug)
        return "anonymous" if obj.tenant_uuid is None else "(deleted tenant)"

    @admin.display(description="client IP")
    def client(self, obj: RequestLog) -> str:
        return obj.client_ip or "—"

    @admin.display(description="latency (ms)")
    def latency(self, obj: RequestLog) -> str:
        return f"{obj.latency_ms:.1f}"

    @admin.display(description="upstream latency (ms)")
    def upstream_latency(self, obj: RequestLog) -> str:
        return "—" if obj.upstream_latency_ms is None else f"{obj.upstream_latency_ms:.1f}"

    @admin.display(description="route")
    def route_ref(self, obj: RequestLog) -> str:
        return f"{obj.route} (ID {obj.route_id})" if obj.route_id is not None else obj.route or "—"

    @admin.display(description="correlation ID")
    def correlation(self, obj: RequestLog) -> str:
        return obj.correlation_id

    @admin.display(description="trace ID")
    def trace(self, obj: RequestLog) -> str:
        return obj.trace_id or "—"


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

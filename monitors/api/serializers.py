"""Serializers of the monitors API (SPEC 5). They give the schema its types and bounds; the
services check every value again (whatever door a write comes through) and say what is wrong."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.api.scoping import TenantOwnedSerializer
from monitors import services
from monitors.models import MIN_INTERVAL_SECONDS, CheckResult, MaintenanceWindow, Monitor


@extend_schema_field({"type": "array", "items": {"type": "integer"}, "maxItems": services.MAX_CHANNELS})
class ChannelIdsField(serializers.ListField):
    """The monitor's notification channels by id; they must be the monitor's tenant's."""

    child = serializers.IntegerField(min_value=1, max_value=services.MAX_INT)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=services.MAX_CHANNELS, **kwargs)

    def to_representation(self, data: Any) -> list[int]:
        # The prefetched channels (selectors.monitor_list), sorted so the answer is stable.
        return sorted(channel.pk for channel in data.all())


class MonitorSerializer(TenantOwnedSerializer):
    name = serializers.CharField(max_length=services.MAX_NAME_CHARS)
    target = serializers.CharField(
        max_length=services.MAX_TARGET_CHARS, help_text="An http(s) URL, or host:port ([v6]:port) for tcp."
    )
    method = serializers.ChoiceField(choices=services.METHODS, required=False)
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=services.MAX_HEADER_VALUE),
        required=False,
        help_text=f"Request headers {{name: value}}, at most {services.MAX_HEADERS}; no CR, LF or NUL.",
    )
    body = serializers.CharField(
        allow_blank=True, trim_whitespace=False, required=False, max_length=services.MAX_BODY_BYTES
    )
    expected_status = serializers.ListField(
        child=serializers.CharField(max_length=16),
        max_length=50,
        required=False,
        help_text='Accepted codes and ranges, e.g. ["200-299", "301"]; empty: 200-299.',
    )
    keyword = serializers.CharField(
        allow_blank=True, trim_whitespace=False, required=False, max_length=services.MAX_KEYWORD_CHARS
    )
    # Not trimmed: the line and column of a syntax error must point into the text as sent.
    conditions = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        required=False,
        max_length=services.MAX_CONDITIONS_CHARS,
        help_text="Rules DSL over status, response_time (ms), headers, body, cert_expiry_days.",
    )
    max_latency_ms = serializers.IntegerField(
        min_value=1, max_value=services.MAX_LATENCY_MS, allow_null=True, required=False
    )
    interval_seconds = serializers.IntegerField(
        min_value=MIN_INTERVAL_SECONDS, max_value=services.MAX_INTERVAL_SECONDS, required=False
    )
    timeout_seconds = serializers.FloatField(
        min_value=0.001, max_value=services.MAX_TIMEOUT_SECONDS, required=False, help_text="Under interval_seconds."
    )
    failure_threshold = serializers.IntegerField(
        min_value=services.MIN_THRESHOLD, max_value=services.MAX_THRESHOLD, required=False
    )
    success_threshold = serializers.IntegerField(
        min_value=services.MIN_THRESHOLD, max_value=services.MAX_THRESHOLD, required=False
    )
    reminder_interval_seconds = serializers.IntegerField(
        min_value=services.MIN_REMINDER_SECONDS, max_value=services.MAX_INT, allow_null=True, required=False
    )
    cert_expiry_warning_days = serializers.IntegerField(
        min_value=services.MIN_CERT_DAYS, max_value=services.MAX_CERT_DAYS, allow_null=True, required=False
    )
    channels = ChannelIdsField(required=False)
    # Text rather than enums in the schema: other components already name a `state` enum.
    state = serializers.CharField(read_only=True, help_text="up, down, paused, unknown or maintenance.")
    last_outcome = serializers.CharField(read_only=True, help_text="The last check's outcome: up, down, or empty.")
    depends_on = serializers.IntegerField(
        source="depends_on_id",
        min_value=1,
        max_value=services.MAX_INT,
        allow_null=True,
        required=False,
        help_text="The id of a monitor of the same tenant whose outage holds this one's alerts.",
    )

    class Meta:
        model = Monitor
        fields = [
            "id", "tenant", "name", "kind", "target", "method", "headers", "body", "expected_status",
            "keyword", "keyword_absent", "max_latency_ms", "conditions", "interval_seconds",
            "timeout_seconds", "failure_threshold", "success_threshold", "verify_tls", "follow_redirects",
            "enabled", "published", "channels", "depends_on", "reminder_interval_seconds",
            "cert_expiry_warning_days", "version", "state", "state_changed_at", "last_checked_at",
            "last_outcome", "last_reason", "last_latency_ms", "cert_expires_at", "next_due_at",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = [
            "id", "version", "state", "state_changed_at", "last_checked_at", "last_outcome", "last_reason",
            "last_latency_ms", "cert_expires_at", "next_due_at", "created_at", "updated_at",
        ]  # fmt: skip
        # (tenant, name) is unique, but the tenant is only known in the view: a taken name is a 409 there.
        validators: list[Any] = []


def monitor_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Validated serializer data as the services' keyword arguments."""
    fields = dict(data)
    if "depends_on_id" in fields:
        fields["depends_on"] = fields.pop("depends_on_id")
    return fields


class CheckResultSerializer(serializers.ModelSerializer[CheckResult]):
    class Meta:
        model = CheckResult
        fields = [
            "id", "checked_at", "outcome", "status_code", "latency_ms", "reason", "failed_condition",
            "cert_expiry_days", "lag_ms",
        ]  # fmt: skip
        read_only_fields = fields


class HistoryPageSerializer(serializers.Serializer[Any]):
    """One page of check results, newest first."""

    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null at the end.")
    results = CheckResultSerializer(many=True)


class _LatencySerializer(serializers.Serializer[Any]):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class _IncidentsSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(help_text="Incidents (a flip to down until the next flip to up) in the period.")
    total_seconds = serializers.FloatField(help_text="Their length inside the period; an open one counts to now.")
    longest_seconds = serializers.FloatField()
    ongoing = serializers.BooleanField(help_text="One is still open.")


class _PeriodSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    uptime_percent = serializers.FloatField(allow_null=True, help_text="null: no check in the period.")
    checks = serializers.IntegerField()
    failures = serializers.IntegerField()
    latency_ms = _LatencySerializer(help_text="Latency percentiles (percentile_cont), milliseconds.")
    incidents = _IncidentsSerializer()


class UptimeSerializer(serializers.Serializer[Any]):
    """Uptime, latency percentiles and incidents over the last 24 hours, 7 days and 30 days."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: _PeriodSerializer() for name in ("24h", "7d", "30d")}


class MaintenanceWindowSerializer(TenantOwnedSerializer):
    monitor = serializers.IntegerField(
        source="monitor_id",
        min_value=1,
        max_value=services.MAX_INT,
        allow_null=True,
        required=False,
        help_text="A monitor of the tenant; null: every monitor of the tenant.",
    )
    name = serializers.CharField(max_length=services.MAX_NAME_CHARS)
    duration_minutes = serializers.IntegerField(min_value=1, max_value=services.MAX_ONCE_WINDOW_MINUTES)
    timezone = serializers.CharField(max_length=64, required=False, help_text="IANA zone a weekly window follows.")

    class Meta:
        model = MaintenanceWindow
        fields = [
            "id",
            "tenant",
            "monitor",
            "name",
            "starts_at",
            "duration_minutes",
            "recurrence",
            "timezone",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]


def window_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Validated serializer data as the services' keyword arguments."""
    fields = dict(data)
    if "monitor_id" in fields:
        fields["monitor"] = fields.pop("monitor_id")
    return fields

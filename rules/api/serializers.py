"""Serializers of the rules API. What an event must be is checked by the services
(``event_ingest``, ``rule_dry_run``), not here."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.api.scoping import TenantOwnedSerializer
from rules.dsl import CompiledRule
from rules.models import Delivery, Event, NotificationChannel, Rule, RuleMatch

# PostgreSQL's integer: the same bound on SQLite, so a value valid here is valid everywhere.
MAX_COOLDOWN_SECONDS = 2_147_483_647


# --- events ------------------------------------------------------------------------------------


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "tenant", "type", "source", "payload", "received_at", "evaluated_at"]
        read_only_fields = fields


class IngestResultSerializer(serializers.Serializer):
    """The ids of the stored events, in the order they were sent."""

    ids = serializers.ListField(child=serializers.IntegerField())
    count = serializers.IntegerField()


# --- rules -------------------------------------------------------------------------------------


class RuleSerializer(TenantOwnedSerializer):
    # Not trimmed: the line and column of a syntax error must point into the text as sent.
    dsl = serializers.CharField(trim_whitespace=False)
    cooldown_seconds = serializers.IntegerField(min_value=0, max_value=MAX_COOLDOWN_SECONDS, required=False)

    class Meta:
        model = Rule
        fields = ["id", "tenant", "name", "dsl", "enabled", "cooldown_seconds", "version", "created_at", "updated_at"]
        read_only_fields = ["id", "version", "created_at", "updated_at"]
        # (tenant, name) is unique, but the tenant is only known in the view: a taken name is a 409 there.
        validators: list[Any] = []


class DslSerializer(serializers.Serializer):
    dsl = serializers.CharField(trim_whitespace=False)


def compiled_summary(rule: CompiledRule) -> dict[str, Any]:
    """What a valid rule listens to and what it does, for `POST /rules/validate`."""
    return {
        "valid": True,
        "event_types": sorted(rule.event_types) if rule.event_types is not None else None,
        "actions": [
            {"kind": action.kind, "target": action.target, "template": action.template} for action in rule.actions
        ],
        "windows": [
            {"kind": window.kind, "seconds": window.seconds, "by": window.group_field} for window in rule.windows
        ],
    }


class _ActionSummarySerializer(serializers.Serializer):
    kind = serializers.CharField()
    target = serializers.CharField()
    template = serializers.CharField(allow_null=True)


class _WindowSummarySerializer(serializers.Serializer):
    kind = serializers.CharField()
    seconds = serializers.IntegerField()
    by = serializers.CharField(allow_null=True)


class DslSummarySerializer(serializers.Serializer):
    """A valid rule: the event types it listens to, what it does, its windows (compiled_summary)."""

    valid = serializers.BooleanField()
    event_types = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="null: the rule looks at every type."
    )
    actions = _ActionSummarySerializer(many=True)
    windows = _WindowSummarySerializer(many=True)


class DryRunSerializer(serializers.Serializer):
    # Any JSON here: `rule_dry_run` refuses what `event_ingest` would, in the same shape.
    event = serializers.JSONField()


class _DryRunActionSerializer(serializers.Serializer):
    kind = serializers.CharField()
    target = serializers.CharField()
    message = serializers.CharField()


class DryRunResultSerializer(serializers.Serializer):
    """Whether the rule matched the sample event, and the notifications it would send
    (``services.DryRunResult``)."""

    matched = serializers.BooleanField()
    actions = _DryRunActionSerializer(many=True)
    group = serializers.CharField(allow_null=True)


# --- channels ----------------------------------------------------------------------------------


class ChannelSerializer(TenantOwnedSerializer):
    # Write-only: it signs webhook bodies, so whoever reads the API must not learn it.
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=200,
        trim_whitespace=False,
        style={"input_type": "password"},
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = ["id", "tenant", "kind", "name", "target", "secret", "has_secret", "active", "created_at"]
        read_only_fields = ["id", "created_at"]
        # (tenant, kind, name) is unique; a taken name is a 409 in the view, where the tenant is known.
        validators: list[Any] = []

    def get_has_secret(self, channel: NotificationChannel) -> bool:
        return bool(channel.secret)


# --- matches and deliveries --------------------------------------------------------------------


class MatchSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)

    class Meta:
        model = RuleMatch
        fields = ["id", "rule", "rule_name", "event", "group_key", "matched_at", "suppressed", "problems"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery; `match` is null for a notification no rule produced (a monitor's alert), which
    says what it is about in `title` and `source_ref` (e.g. ``monitor-flip:123``)."""

    channel_label = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "match",
            "title",
            "source_ref",
            "channel",
            "channel_label",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "sent_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_channel_label(self, delivery: Delivery) -> str:
        return f"{delivery.channel.kind}:{delivery.channel.name}"

"""Serializers of the rules API, and the checks an event passes before anything is stored."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from accounts.api.scoping import TenantOwnedSerializer
from rules.dsl import CompiledRule, Match
from rules.models import Delivery, Event, NotificationChannel, Rule, RuleMatch
from rules.services import MAX_EVENTS_PER_REQUEST

# PostgreSQL's integer: the same bound on SQLite, so a value valid here is valid everywhere.
MAX_COOLDOWN_SECONDS = 2_147_483_647


# --- events ------------------------------------------------------------------------------------


def _limit(name: str) -> int:
    # Read per call, not at import: tests and deployments may override the settings.
    limits: Any = settings.SENTINEL_RULES
    return int(limits[name])


def event_problem(event: Any) -> str | None:
    """Why one event cannot be stored, or None. Checked before any write, for every event."""
    if not isinstance(event, dict):
        return "An event must be a JSON object."
    if "type" in event and not isinstance(event["type"], str):
        return "`type` must be a string."
    problem = _structure_problem(event, _limit("EVENT_MAX_DEPTH"))
    if problem is not None:
        return problem
    limit = _limit("EVENT_MAX_BYTES")
    # The depth is bounded by now, so json.dumps cannot recurse too deep.
    size = len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limit:
        return f"An event may not be larger than {limit} bytes serialized (this one is {size})."
    return None


def _structure_problem(event: dict[str, Any], max_depth: int) -> str | None:
    """Nesting depth and values the database cannot store, walked iteratively (no recursion, so
    a hostile payload cannot exhaust the stack). The event itself is level 1."""
    pending: list[tuple[Any, int]] = [(event, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                return f"An event may not be nested more than {max_depth} levels deep."
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    return problem
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                return f"An event may not be nested more than {max_depth} levels deep."
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem is not None:
                return problem
        elif isinstance(value, float) and not math.isfinite(value):
            # `1e999` parses to infinity, which JSON (and PostgreSQL's jsonb) cannot represent.
            return "Numbers must be finite."
    return None


def _text_problem(text: str) -> str | None:
    # PostgreSQL's jsonb refuses \u0000, and lone surrogates are not valid UTF-8: both would
    # fail at the INSERT (a 500) rather than here (a 400).
    if "\x00" in text:
        return "Text may not contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Text must be valid Unicode (no lone surrogates)."
    return None


def validated_events(data: Any) -> list[dict[str, Any]]:
    """One event or a list of 1..1000 events, each checked; raises a ValidationError naming the
    first bad event by its position (0 for a single object)."""
    events = data if isinstance(data, list) else [data]
    if not events:
        raise serializers.ValidationError({"events": ["Send at least one event."]})
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise serializers.ValidationError(
            {"events": [f"At most {MAX_EVENTS_PER_REQUEST} events per request (got {len(events)})."]}
        )
    for index, event in enumerate(events):
        problem = event_problem(event)
        if problem is not None:
            raise serializers.ValidationError({"events": {str(index): [problem]}})
    return events


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "tenant", "type", "source", "payload", "received_at", "evaluated_at"]
        read_only_fields = fields


class IngestResultSerializer(serializers.Serializer):
    """The 202 answer to an ingest (documentation only)."""

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


class DryRunSerializer(serializers.Serializer):
    event = serializers.JSONField()

    def validate_event(self, value: Any) -> dict[str, Any]:
        problem = event_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value


def dry_run_result(match: Match | None) -> dict[str, Any]:
    if match is None:
        return {"matched": False, "actions": [], "group": None}
    return {
        "matched": True,
        "actions": [{"kind": a.kind, "target": a.target, "message": a.message} for a in match.actions],
        "group": match.group_key or None,
    }


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
    channel_label = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "match",
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

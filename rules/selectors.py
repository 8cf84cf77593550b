"""Reads of the rules app. Tenant scoping is the caller's job (the REST layer's tenant wall)."""

from __future__ import annotations

from django.db.models import QuerySet

from rules.models import Delivery, Event, NotificationChannel, Rule, RuleMatch


def event_list(*, event_type: str | None = None) -> QuerySet[Event]:
    """Newest first; ``event_type`` narrows to one event type (served by the tenant/type/time index)."""
    events = Event.objects.select_related("tenant").order_by("-received_at", "-id")
    if event_type is not None:
        events = events.filter(type=event_type)
    return events


def rule_list() -> QuerySet[Rule]:
    return Rule.objects.select_related("tenant").order_by("tenant_id", "name")


def channel_list() -> QuerySet[NotificationChannel]:
    return NotificationChannel.objects.select_related("tenant").order_by("tenant_id", "kind", "name")


def match_list(*, rule_id: int | None = None, suppressed: bool | None = None) -> QuerySet[RuleMatch]:
    matches = RuleMatch.objects.select_related("rule", "tenant").order_by("-matched_at", "-id")
    if rule_id is not None:
        matches = matches.filter(rule_id=rule_id)
    if suppressed is not None:
        matches = matches.filter(suppressed=suppressed)
    return matches


def delivery_list(*, status: str | None = None) -> QuerySet[Delivery]:
    deliveries = Delivery.objects.select_related("channel", "tenant").order_by("-created_at", "-id")
    if status is not None:
        deliveries = deliveries.filter(status=status)
    return deliveries

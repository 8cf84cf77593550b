"""Reads of the rules app. Tenant scoping is the caller's job (the REST layer's tenant wall)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from rules.models import Delivery, Event, NotificationChannel, Rule, RuleMatch


def event_list(*, event_type: str | None = None) -> QuerySet[Event]:
    """Newest first; ``event_type`` narrows to one event type (served by the tenant/type/time index)."""
    events = Event.objects.select_related("tenant").order_by("-received_at", "-id")
    if event_type is not None:
        events = events.filter(type=event_type)
    return events


def rule_list() -> QuerySet[Rule]:
    """Every rule with its tenant, by tenant then name."""
    return Rule.objects.select_related("tenant").order_by("tenant_id", "name")


def channel_list() -> QuerySet[NotificationChannel]:
    """Every notification channel with its tenant, by tenant, kind, then name."""
    return NotificationChannel.objects.select_related("tenant").order_by("tenant_id", "kind", "name")


def match_list(*, rule_id: int | None = None, suppressed: bool | None = None) -> QuerySet[RuleMatch]:
    """Matches with their rule and tenant, newest first; narrowed to one rule, or to matches
    within (``suppressed=True``) or outside a cooldown, when given."""
    matches = RuleMatch.objects.select_related("rule", "tenant").order_by("-matched_at", "-id")
    if rule_id is not None:
        matches = matches.filter(rule_id=rule_id)
    if suppressed is not None:
        matches = matches.filter(suppressed=suppressed)
    return matches


def delivery_list(*, status: str | None = None) -> QuerySet[Delivery]:
    """Deliveries with their channel and tenant, newest first; ``status`` (a DeliveryStatus
    value) narrows to one state."""
    deliveries = Delivery.objects.select_related("channel", "tenant").order_by("-created_at", "-id")
    if status is not None:
        deliveries = deliveries.filter(status=status)
    return deliveries


# --- the sweepers' reads ---------------------------------------------------------------------


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Ids of claimable deliveries (``DeliveryQuerySet.claimable``), the longest due first, at most
    ``limit``: their task may have been lost (a worker killed mid-send, a broker restart)."""
    now = now or timezone.now()
    return list(Delivery.objects.claimable(now).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def events_unevaluated(*, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Ids of events stored more than ``older_than`` ago and still not evaluated (the broker lost
    their task, a worker died), the oldest first, at most ``limit``."""
    horizon = timezone.now() - older_than
    return list(
        Event.objects.filter(evaluated_at=None, received_at__lt=horizon)
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )

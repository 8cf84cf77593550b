"""Rule evaluation: events against the tenant's compiled rules, matches recorded under a per-rule
lock with cooldowns, deliveries queued."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from rules import metrics
from rules.dsl import CompiledRule, EvalContext, Match, RuleIndex
from rules.models import (
    Delivery,
    Event,
    NotificationChannel,
    Rule,
    RuleMatch,
)
from rules.services.definitions import compile_rule_cached
from rules.tasks import delivery_attempt_enqueue
from rules.window_store import window_store

logger = logging.getLogger("sentinel.rules")


@dataclass
class EvaluationReport:
    """What one ``events_evaluate`` call did: events read, matches recorded, deliveries queued."""

    events: int = 0
    matches: int = 0
    deliveries: int = 0


def events_evaluate(*, event_ids: Sequence[int]) -> EvaluationReport:
    """Tests each event against its tenant's enabled rules; records matches and queues deliveries.

    Safe to run twice for the same events: window entries are keyed by event id, and a match is
    unique per (rule, event), so a retried batch neither double-counts nor double-notifies.
    """
    events = list(Event.objects.filter(pk__in=event_ids).select_related("tenant").order_by("received_at", "pk"))
    report = EvaluationReport(events=len(events))
    by_tenant: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_tenant[event.tenant_id].append(event)
    store = window_store()
    for tenant_id, tenant_events in by_tenant.items():
        rules = {rule.pk: rule for rule in Rule.objects.enabled().filter(tenant_id=tenant_id)}
        index = RuleIndex((rule.pk, compile_rule_cached(rule.dsl, rule.name)) for rule in rules.values())
        for event in tenant_events:
            for rule_id, compiled_rule in index.candidates(event.payload):
                rule = rules[rule_id]
                context = EvalContext(
                    store=store,
                    tenant=str(tenant_id),
                    rule=f"{rule.pk}.v{rule.version}",
                    event_id=str(event.pk),
                    now=event.received_at.timestamp(),
                )
                match = _evaluate_safely(compiled_rule, event, context, rule)
                if match is not None:
                    report.deliveries += match_record(rule=rule, event=event, match=match)
                    report.matches += 1
    Event.objects.filter(pk__in=[event.pk for event in events]).update(evaluated_at=timezone.now())
    return report


def _evaluate_safely(compiled_rule: CompiledRule, event: Event, context: EvalContext, rule: Rule) -> Match | None:
    try:
        return compiled_rule.evaluate(event.payload, context)
    except Exception:  # one bad rule must not stop the others (nor the batch's retries)
        logger.exception("rule %s failed on event %s", rule.pk, event.pk)
        return None


def match_record(*, rule: Rule, event: Event, match: Match) -> int:
    """Records a match and, outside the cooldown, one delivery per named channel. Returns how
    many deliveries were queued."""
    with transaction.atomic():
        # Serialises matches of one rule: two workers matching the same group at once would
        # both see "no recent notification" and both notify.
        Rule.objects.select_for_update().filter(pk=rule.pk).first()
        if RuleMatch.objects.filter(rule=rule, event=event).exists():
            return 0  # a retried evaluation: this event already matched
        now = timezone.now()
        group = match.group_key[:200]
        suppressed = rule.cooldown_seconds > 0 and (
            RuleMatch.objects.filter(
                rule=rule,
                group_key=group,
                suppressed=False,
                matched_at__gt=now - timedelta(seconds=rule.cooldown_seconds),
            ).exists()
        )
        channels = _channels_named(rule.tenant_id, match)
        problems = [f"no {kind} channel named {name!r}" for kind, name in channels if channels[(kind, name)] is None]
        record = RuleMatch.objects.create(
            tenant_id=rule.tenant_id, rule=rule, event=event, group_key=group, suppressed=suppressed, problems=problems
        )
        metrics.rules_triggered.inc()
        if suppressed:
            return 0
        deliveries = [
            Delivery(tenant_id=rule.tenant_id, match=record, channel=channel, message=action.message)
            for action in match.actions
            if (channel := channels[(action.kind, action.target)]) is not None
        ]
        # Two actions naming one channel notify it once.
        unique = list({delivery.channel.pk: delivery for delivery in deliveries}.values())
        Delivery.objects.bulk_create(unique)
        ids = [delivery.pk for delivery in unique]
        transaction.on_commit(lambda: delivery_attempt_enqueue(ids), robust=True)
    return len(ids)


def _channels_named(tenant_id: int, match: Match) -> dict[tuple[str, str], NotificationChannel | None]:
    wanted = {(action.kind, action.target) for action in match.actions}
    query = Q()
    for kind, name in wanted:
        query |= Q(kind=kind, name=name)
    found = {
        (channel.kind, channel.name): channel
        for channel in NotificationChannel.objects.filter(query, tenant_id=tenant_id, active=True)
    }
    return {key: found.get(key) for key in wanted}

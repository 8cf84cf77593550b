"""Writes of the rules app (SPEC 4), one module per job: ``events`` (ingest), ``definitions`` (rules
and channels), ``evaluation``, ``delivery``, ``notifications`` (deliveries no rule produced).
Callers import from here: ``from rules import services``."""

from __future__ import annotations

from rules.models import ChannelKind
from rules.services._common import MAX_EVENTS_PER_REQUEST, EventInvalid, RuleEvaluationFailed, RuleInvalid
from rules.services.definitions import (
    DryRunAction,
    DryRunResult,
    channel_create,
    channel_delete,
    channel_target_check,
    channel_update,
    compile_rule_cached,
    rule_create,
    rule_delete,
    rule_dry_run,
    rule_set_enabled,
    rule_update,
    rule_validate,
)
from rules.services.delivery import (
    delivery_attempt,
    delivery_claim,
    delivery_resend,
    next_attempt_delay,
    receiver_pause,
    receiver_paused_until,
    retry_delay,
)
from rules.services.evaluation import EvaluationReport, events_evaluate, match_record
from rules.services.events import event_ingest, event_problem
from rules.services.notifications import notification_send

__all__ = [
    "MAX_EVENTS_PER_REQUEST",
    "ChannelKind",
    "DryRunAction",
    "DryRunResult",
    "EvaluationReport",
    "EventInvalid",
    "RuleEvaluationFailed",
    "RuleInvalid",
    "channel_create",
    "channel_delete",
    "channel_target_check",
    "channel_update",
    "compile_rule_cached",
    "delivery_attempt",
    "delivery_claim",
    "delivery_resend",
    "event_ingest",
    "event_problem",
    "events_evaluate",
    "match_record",
    "next_attempt_delay",
    "notification_send",
    "receiver_pause",
    "receiver_paused_until",
    "retry_delay",
    "rule_create",
    "rule_delete",
    "rule_dry_run",
    "rule_set_enabled",
    "rule_update",
    "rule_validate",
]

"""Rules and notification channels: create, update, validate, dry-run, delete (SPEC 4)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, TypedDict

from django.db.models import F
from django.utils import timezone

from accounts.models import Tenant
from core.db import unique_or_conflict
from core.egress import EgressDenied
from core.egress_django import egress_policy, egress_refusal_record
from core.errors import DomainError
from rules import notifiers
from rules.dsl import CompiledRule, DslError, DslSyntaxError, compile_rule
from rules.models import (
    ChannelKind,
    NotificationChannel,
    Rule,
)
from rules.services._common import EventInvalid, RuleEvaluationFailed, RuleInvalid
from rules.services.events import event_problem

logger = logging.getLogger("sentinel.rules")


def rule_validate(dsl: str) -> CompiledRule:
    """Compiles the DSL or raises RuleInvalid with the position of the error."""
    try:
        return compile_rule_cached(dsl)
    except DslSyntaxError as exc:
        raise RuleInvalid(f"Syntax error: {exc.message}", details={"dsl": exc.as_dict()}) from None
    except DslError as exc:
        raise RuleInvalid(exc.message, details={"dsl": exc.as_dict()}) from None


@lru_cache(maxsize=4096)
def compile_rule_cached(dsl: str, name: str = "") -> CompiledRule:
    """``compile_rule`` behind a process-wide cache: one compilation per distinct DSL text and
    rule name (the name goes into default messages), the 4,096 most recent kept. Raises DslError
    (not cached) for a text that does not compile."""
    return compile_rule(dsl, name=name)


class DryRunAction(TypedDict):
    kind: str
    target: str
    message: str


class DryRunResult(TypedDict):
    """What a rule would do with one event: whether it matched, the notifications it would send
    (channel kind, channel name, rendered message) and the group it matched for (None: no `by`)."""

    matched: bool
    actions: list[DryRunAction]
    group: str | None


def rule_dry_run(*, rule: Rule, payload: Any) -> DryRunResult:
    """Evaluates a stored rule against a sample event with fresh windows; records nothing.

    Raises EventInvalid (details ``{"event": ["<why>"]}``) for a payload ``event_ingest`` would
    refuse, RuleInvalid when the stored DSL no longer compiles, and RuleEvaluationFailed (the
    error as its ``__cause__``, logged here) when the rule fails on this event.
    """
    problem = event_problem(payload=payload)
    if problem is not None:
        raise EventInvalid(problem, details={"event": [problem]})
    compiled_rule = rule_validate(rule.dsl)
    try:
        match = compiled_rule.dry_run(payload)
    except Exception as exc:  # a sample event must never be a 500; the log keeps the cause
        logger.exception("dry run of rule %s failed", rule.pk)
        raise RuleEvaluationFailed("The rule failed while evaluating this event.") from exc
    if match is None:
        return {"matched": False, "actions": [], "group": None}
    actions: list[DryRunAction] = [
        {"kind": action.kind, "target": action.target, "message": action.message} for action in match.actions
    ]
    return {"matched": True, "actions": actions, "group": match.group_key or None}


def rule_create(*, tenant: Tenant, name: str, dsl: str, enabled: bool = True, cooldown_seconds: int = 300) -> Rule:
    """Creates a rule in `tenant` at version 1; `cooldown_seconds` is how long a match of the same
    group is recorded without notifying. Raises RuleInvalid (with the error's position) when the
    DSL does not compile, Conflict (409) when the tenant has a rule of that name."""
    rule_validate(dsl)
    with unique_or_conflict("A rule with this name exists.", "name"):
        return Rule.objects.create(
            tenant=tenant, name=name, dsl=dsl, enabled=enabled, cooldown_seconds=cooldown_seconds
        )


def rule_update(*, rule: Rule, **fields: Any) -> Rule:
    """Changes any of `name`, `dsl`, `enabled`, `cooldown_seconds`; a changed DSL moves the rule
    to a new version (fresh windows). Raises DomainError for any other field, RuleInvalid when
    the new DSL does not compile, Conflict (409) when the new name is taken in the tenant."""
    unknown = set(fields) - {"name", "dsl", "enabled", "cooldown_seconds"}
    if unknown:
        raise DomainError(f"Unknown rule fields: {', '.join(sorted(unknown))}.")
    new_version = "dsl" in fields and fields["dsl"] != rule.dsl
    if new_version:
        rule_validate(fields["dsl"])
    for field, value in fields.items():
        setattr(rule, field, value)
    with unique_or_conflict("A rule with this name exists.", "name"):
        if new_version:
            # A new version starts with empty windows: counts under the old condition mean
            # nothing. F(): two concurrent edits get two versions, not one.
            rule.version = F("version") + 1
        rule.save()
    rule.refresh_from_db(fields=["version"])
    return rule


def rule_set_enabled(*, rules: Iterable[Rule], enabled: bool) -> int:
    """Enables or disables rules in one UPDATE; returns how many rows it changed. Raises nothing
    of its own."""
    return Rule.objects.filter(pk__in=[rule.pk for rule in rules]).update(enabled=enabled, updated_at=timezone.now())


_CHANNEL_TAKEN = "A channel of this kind with this name exists."


def channel_target_check(*, tenant: Tenant, kind: str, target: str) -> None:
    """A channel's target as the channel services accept it: the kind's shape (notifiers), then, for
    the HTTP kinds, the egress policy's save-time check (SPEC 7, core.egress): every address the URL
    resolves to must be public unicast or in EGRESS_ALLOWED_NETWORKS. Channels always belong to a
    tenant, so none is exempt. Raises DomainError (``egress_denied`` naming the address and the rule)."""
    notifiers.validate_target(kind, target)
    if kind == ChannelKind.EMAIL:
        return  # mail goes to the configured SMTP server, not to an address the tenant chose
    try:
        egress_policy().check_target(target)
    except EgressDenied as denied:
        egress_refusal_record(kind="channel", stage="save", tenant=str(tenant.uuid), target=target, denied=denied)
        raise DomainError(
            denied.message, details={"field": "target", **denied.details()}, code="egress_denied"
        ) from None


def channel_create(
    *, tenant: Tenant, kind: str, name: str, target: str, secret: str = "", active: bool = True
) -> NotificationChannel:
    """Creates a notification channel in `tenant`; `secret` signs webhook bodies. Raises
    DomainError when the target does not suit the kind or the egress policy refuses it
    (``channel_target_check``), Conflict (409) when the tenant has a channel of that kind and name."""
    channel = NotificationChannel(tenant=tenant, kind=kind, name=name, target=target, secret=secret, active=active)
    channel_target_check(tenant=tenant, kind=kind, target=target)
    with unique_or_conflict(_CHANNEL_TAKEN, "kind", "name"):
        channel.save()
    return channel


def channel_update(*, channel: NotificationChannel, **fields: Any) -> NotificationChannel:
    """Changes any of `kind`, `name`, `target`, `secret`, `active`, the target checked again.
    Raises DomainError for any other field or a target ``channel_target_check`` refuses, Conflict
    (409) when the new kind and name are taken in the tenant."""
    unknown = set(fields) - {"kind", "name", "target", "secret", "active"}
    if unknown:
        raise DomainError(f"Unknown channel fields: {', '.join(sorted(unknown))}.")
    for field, value in fields.items():
        setattr(channel, field, value)
    channel_target_check(tenant=channel.tenant, kind=channel.kind, target=channel.target)
    with unique_or_conflict(_CHANNEL_TAKEN, "kind", "name"):
        channel.save()
    return channel


def rule_delete(*, rule: Rule) -> None:
    """Deletes a rule with its matches and their deliveries (pending ones are never sent); its
    window counts expire on their own. Raises nothing of its own."""
    rule.delete()


def channel_delete(*, channel: NotificationChannel) -> None:
    """Deletes a channel with its deliveries; a rule naming it records the missing channel as a
    problem on its next match. Raises nothing of its own."""
    channel.delete()

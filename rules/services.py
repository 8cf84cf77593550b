"""Writes of the rules app: ingest, rules, channels, evaluation and delivery (SPEC 4)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypedDict

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Tenant
from core.conf import sentinel_settings
from core.egress import EgressDenied
from core.egress_django import egress_policy, egress_refusal_record
from core.errors import Conflict, DomainError
from rules import metrics, notifiers
from rules.dsl import CompiledRule, DslError, DslSyntaxError, EvalContext, Match, RuleIndex, compile_rule
from rules.models import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Event,
    EventSource,
    NotificationChannel,
    Rule,
    RuleMatch,
)
from rules.tasks import delivery_attempt_enqueue, events_evaluate_enqueue
from rules.window_store import window_store

logger = logging.getLogger("sentinel.rules")

# Events per call of `event_ingest` (a request, a stream entry).
MAX_EVENTS_PER_REQUEST = 1000


class RuleInvalid(DomainError):
    """The DSL does not compile; `details` carries the position and what was expected."""

    code = "invalid_rule"


class EventInvalid(DomainError):
    """Events refused before anything is stored (400). ``details`` in the API's validation shape:
    ``{"events": ["<why>"]}`` for a batch of the wrong size, ``{"events": {"<index>": ["<why>"]}}``
    for the first event that cannot be stored (its position in the batch, 0 for a lone event), and
    ``{"event": ["<why>"]}`` for a dry run's sample event."""

    code = "validation_error"


class RuleEvaluationFailed(DomainError):
    """A rule raised while evaluating a sample event (a dry run); the error is the ``__cause__``."""

    code = "evaluation_failed"


@contextmanager
def _unique_name(message: str, *fields: str) -> Iterator[None]:
    """The unique constraint's IntegrityError as a Conflict (409). Catching it, rather than
    checking first, also covers two concurrent requests for one name; the savepoint keeps an
    outer transaction usable."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError:
        raise Conflict(message, details={field: [message] for field in fields}) from None


# --- Ingest ------------------------------------------------------------------------------------


def event_ingest(
    *, tenant: Tenant, payloads: Sequence[Any], source: str = EventSource.API, source_ref: str = ""
) -> list[int]:
    """Checks every payload, stores them as events and queues their evaluation once they are
    committed. Returns their ids, in the order given.

    Raises EventInvalid, before anything is written, when there are no payloads or more than
    MAX_EVENTS_PER_REQUEST, or when one cannot be stored (``event_problem``: not a JSON object,
    a `type` that is not a string, too deep, too large, NUL or lone surrogates in its text,
    non-finite numbers); the details name the first such payload by its index.

    With a `source_ref` (a stream entry id), events already stored from it are not stored again
    and an empty list is returned: the stream redelivered an entry whose acknowledgement was lost.
    """
    _payloads_check(payloads)
    if source_ref and Event.objects.filter(tenant=tenant, source_ref=f"{source_ref}:0").exists():
        return []
    now = timezone.now()
    events = [
        Event(
            tenant=tenant,
            type=_event_type(payload),
            payload=dict(payload),
            source=source,
            received_at=now,
            source_ref=f"{source_ref}:{position}" if source_ref else "",
        )
        for position, payload in enumerate(payloads)
    ]
    with transaction.atomic():
        Event.objects.bulk_create(events, batch_size=500)
        ids = [event.pk for event in events]
        # robust: a broker that is down must not turn stored events into an error answer; the
        # events sweeper (tasks.events_sweep) queues whatever stayed unevaluated.
        transaction.on_commit(lambda: events_evaluate_enqueue(ids), robust=True)
    metrics.events_ingested.inc(len(ids))
    return ids


def _payloads_check(payloads: Sequence[Any]) -> None:
    """Every check `event_ingest` makes before its first write; raises EventInvalid."""
    if not payloads:
        raise EventInvalid("Send at least one event.", details={"events": ["Send at least one event."]})
    if len(payloads) > MAX_EVENTS_PER_REQUEST:
        message = f"At most {MAX_EVENTS_PER_REQUEST} events per request (got {len(payloads)})."
        raise EventInvalid(message, details={"events": [message]})
    for index, payload in enumerate(payloads):
        problem = event_problem(payload=payload)
        if problem is not None:
            raise EventInvalid(f"Event {index}: {problem}", details={"events": {str(index): [problem]}})


def event_problem(*, payload: Any) -> str | None:
    """Why one payload cannot be stored as an event, or None: it must be a JSON object (a dict)
    whose `type`, when present, is a string, nested at most EVENT_MAX_DEPTH levels, at most
    EVENT_MAX_BYTES serialized, without NUL or lone surrogates in its text or non-finite numbers.
    ``event_ingest`` and ``rule_dry_run`` check with it; forms may too, to show the problem."""
    if not isinstance(payload, dict):
        return "An event must be a JSON object."
    if "type" in payload and not isinstance(payload["type"], str):
        return "`type` must be a string."
    problem = _structure_problem(payload, sentinel_settings.rules.EVENT_MAX_DEPTH)
    if problem is not None:
        return problem
    limit = sentinel_settings.rules.EVENT_MAX_BYTES
    # The depth is bounded by now, so json.dumps cannot recurse too deep.
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
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


def _event_type(payload: Mapping[str, Any]) -> str:
    kind = payload.get("type")
    return kind[:100] if isinstance(kind, str) else ""


# --- Rules and channels ------------------------------------------------------------------------


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
    with _unique_name("A rule with this name exists.", "name"):
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
    with _unique_name("A rule with this name exists.", "name"):
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
    with _unique_name(_CHANNEL_TAKEN, "kind", "name"):
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
    with _unique_name(_CHANNEL_TAKEN, "kind", "name"):
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


# --- Evaluation --------------------------------------------------------------------------------


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


# --- Delivery ----------------------------------------------------------------------------------


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Takes a due delivery for one send attempt, or None when it is not this worker's to send.

    A conditional UPDATE: of two workers holding the same task (a redelivery after a crash),
    only one changes the row. A claim left by a killed worker lapses with its lease.
    """
    now = now or timezone.now()
    lease = timedelta(seconds=sentinel_settings.rules.DELIVERY_LEASE_SECONDS)
    claimed = (
        Delivery.objects.claimable(now)
        .filter(pk=delivery_id)
        .update(status=DeliveryStatus.SENDING, lease_until=now + lease, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    return Delivery.objects.select_related("channel", "match__rule", "match__event").get(pk=delivery_id)


def delivery_attempt(*, delivery_id: int) -> Delivery | None:
    """One send attempt: sent, failed (with the next attempt's time) or dead.

    Dead at once when the receiver refused for good (`DeliveryFailed.permanent`), or after the
    last of DELIVERY_MAX_ATTEMPTS; `last_error` says which and why. What counts as permanent,
    transient or a request to wait is decided in `rules.notifiers` (README, "Rules and
    notifications"). Counted in notifications_sent_total{channel, outcome=sent|failed|dead}.

    A receiver's request to wait holds every delivery to the same target, not only the one it
    answered: a delivery claimed while its receiver is paused goes back unsent, without using
    an attempt, to the end of the pause (status pending or failed, `next_attempt_at` then).
    """
    delivery = delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    channel = delivery.channel
    paused = receiver_paused_until(target=channel.target)
    if paused is not None:
        return _delivery_deferred(delivery, paused)
    try:
        empty_for = notifiers.send(channel, delivery)
    except notifiers.DeliveryFailed as exc:
        return _delivery_failed(delivery, exc)
    except Exception as exc:
        # Escaping here would leave the row `sending` to be claimed again after every lease,
        # its attempts counting past the maximum: record it like any other failure.
        logger.exception("delivery %s: unexpected error while sending", delivery.pk)
        return _delivery_failed(delivery, notifiers.classify_unexpected_error(exc))
    if empty_for:
        receiver_pause(target=channel.target, seconds=empty_for)
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT, sent_at=timezone.now(), lease_until=None, last_error=""
    )
    metrics.notifications_sent.labels(channel.kind, "sent").inc()
    delivery.refresh_from_db()
    return delivery


def _delivery_failed(delivery: Delivery, failure: notifiers.DeliveryFailed) -> Delivery:
    now = timezone.now()
    status, next_at, error = DeliveryStatus.DEAD, now, f"{failure}: permanent, not retried"
    if not failure.permanent:
        max_attempts = sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS
        if delivery.attempts >= max_attempts:
            error = f"{failure}: attempt {delivery.attempts} of {max_attempts} was the last"
        else:
            delay, plan = next_attempt_delay(attempts=delivery.attempts, failure=failure)
            status, next_at, error = DeliveryStatus.FAILED, now + timedelta(seconds=delay), f"{failure}: {plan}"
    if failure.retry_after is not None and not failure.permanent:
        # The wait is the receiver's, whatever becomes of this delivery; the same `now` makes
        # the pause end exactly at this delivery's next attempt.
        receiver_pause(target=delivery.channel.target, seconds=failure.retry_after, now=now)
    outcome = "dead" if status == DeliveryStatus.DEAD else "failed"
    metrics.notifications_sent.labels(delivery.channel.kind, outcome).inc()
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=status, next_attempt_at=next_at, lease_until=None, last_error=error[:2000]
    )
    delivery.refresh_from_db()
    return delivery


def _delivery_deferred(delivery: Delivery, until: datetime) -> Delivery:
    """Gives a claimed delivery back unsent, its attempt not counted, until the receiver's pause
    ends. Pending if it was never tried, failed (keeping its count) if it was."""
    status = DeliveryStatus.FAILED if delivery.attempts > 1 else DeliveryStatus.PENDING
    reason = f"not sent: the receiver asked for a pause until {until.isoformat(timespec='seconds')}"
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=status, attempts=F("attempts") - 1, next_attempt_at=until, lease_until=None, last_error=reason
    )
    delivery.refresh_from_db()
    return delivery


def _receiver_key(target: str) -> str:
    # Keyed by the target, not the channel: two channels posting to one webhook URL share the
    # receiver's limit, and a key cannot outlive its meaning when a channel's target changes.
    return "rules:receiver-pause:" + hashlib.sha256(target.encode()).hexdigest()[:32]


def receiver_pause(*, target: str, seconds: float, now: datetime | None = None) -> datetime:
    """Holds deliveries to `target` for `seconds` (capped at DELIVERY_MAX_RETRY_AFTER_SECONDS),
    in the shared cache so every worker sees it. A pause is only ever extended. Returns its end."""
    now = now or timezone.now()
    seconds = min(max(seconds, 0.0), float(sentinel_settings.rules.DELIVERY_MAX_RETRY_AFTER_SECONDS))
    until = now + timedelta(seconds=seconds)
    current = receiver_paused_until(target=target, now=now)
    if current is not None and current >= until:
        return current
    # Two workers may race here; the later write wins and both ends are the receiver's own asks.
    cache.set(_receiver_key(target), until.timestamp(), timeout=math.ceil(seconds) + 1)
    return until


def receiver_paused_until(*, target: str, now: datetime | None = None) -> datetime | None:
    """The end of the pause a receiver asked for, or None when deliveries to it may go."""
    until = cache.get(_receiver_key(target))
    if not isinstance(until, int | float):
        return None
    end = datetime.fromtimestamp(until, tz=UTC)
    return end if end > (now or timezone.now()) else None


def next_attempt_delay(*, attempts: int, failure: notifiers.DeliveryFailed) -> tuple[float, str]:
    """Seconds until the next attempt after a transient failure, and the plan in words.

    The receiver's own delay when it asked for one (Retry-After, Discord's retry_after),
    never more than DELIVERY_MAX_RETRY_AFTER_SECONDS; otherwise `retry_delay(attempts)`.
    A receiver's delay is taken as asked, without jitter: it is the receiver's schedule.
    """
    if failure.retry_after is None:
        return retry_delay(attempts), "transient, retried with backoff"
    cap = float(sentinel_settings.rules.DELIVERY_MAX_RETRY_AFTER_SECONDS)
    asked = failure.retry_after
    if asked > cap:
        return cap, (
            f"the receiver asked to wait {asked:g} s ({failure.retry_source}); "
            f"waiting the maximum of {cap:g} s (DELIVERY_MAX_RETRY_AFTER_SECONDS)"
        )
    return asked, f"the receiver asked to wait {asked:g} s ({failure.retry_source}); retried then"


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), capped, times a random factor in [0.5, 1]."""
    base = sentinel_settings.rules.DELIVERY_BACKOFF_SECONDS
    ceiling = min(sentinel_settings.rules.DELIVERY_BACKOFF_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    return float(ceiling * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security


def delivery_resend(*, deliveries: Iterable[Delivery]) -> list[int]:
    """An operator's resend: dead or failed deliveries get a fresh set of attempts, now."""
    ids = [delivery.pk for delivery in deliveries]
    with transaction.atomic():
        resent = list(
            Delivery.objects.filter(pk__in=ids, status__in=[DeliveryStatus.DEAD, DeliveryStatus.FAILED]).values_list(
                "pk", flat=True
            )
        )
        Delivery.objects.filter(pk__in=resent).update(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now(), lease_until=None
        )
        transaction.on_commit(lambda: delivery_attempt_enqueue(resent), robust=True)
    return resent


__all__ = [
    "ChannelKind",
    "DryRunResult",
    "EvaluationReport",
    "EventInvalid",
    "RuleEvaluationFailed",
    "RuleInvalid",
    "channel_create",
    "channel_update",
    "delivery_attempt",
    "delivery_resend",
    "event_ingest",
    "events_evaluate",
    "match_record",
    "rule_create",
    "rule_dry_run",
    "rule_update",
]

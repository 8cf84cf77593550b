"""Delivery of notifications: claim with a lease, send, classify the receiver's answer, then back
off or finish (README, "Rules and notifications")."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.conf import sentinel_settings
from rules import metrics, notifiers
from rules.models import (
    Delivery,
    DeliveryStatus,
)
from rules.tasks import delivery_attempt_enqueue

logger = logging.getLogger("sentinel.rules")


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
    # A left join: a delivery no rule produced has no match.
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

"""Notifications no rule produced: another app's alert (a monitor going down) sent through the
same delivery machinery as a rule's (claim with a lease, retries with backoff, dead letters,
signed webhooks, Retry-After, the egress policy at connect)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction

from accounts.models import Tenant
from core.errors import DomainError
from rules.models import Delivery, NotificationChannel
from rules.tasks import delivery_attempt_enqueue

# Delivery.title and Delivery.source_ref column widths.
TITLE_MAX_LENGTH = 200
SOURCE_REF_MAX_LENGTH = 100


def notification_send(
    *,
    tenant: Tenant,
    channels: Iterable[NotificationChannel],
    title: str,
    message: str,
    context: Mapping[str, Any],
    source_ref: str,
) -> list[int]:
    """Creates one delivery per active channel of `tenant` among `channels` and queues them once
    committed. Returns the ids of the deliveries this call created, by channel id.

    `title` is the e-mail subject and a webhook's ``alert.title`` (cut to 200 characters);
    `message` the text (Slack, Discord, e-mail body, webhook ``message``); `context` a JSON
    object merged into a webhook's ``alert`` next to the title. `source_ref` (at most 100
    characters, required) names what is notified, e.g. ``monitor-flip:123``: a channel already
    notified for it is skipped (the unique constraint (channel, source_ref)), so a re-run never
    notifies a channel twice. Channels of another tenant, or inactive ones, are ignored.

    Raises DomainError when `source_ref` is empty or too long.
    """
    if not source_ref or len(source_ref) > SOURCE_REF_MAX_LENGTH:
        raise DomainError(
            f"A notification needs a source_ref of 1 to {SOURCE_REF_MAX_LENGTH} characters.",
            details={"source_ref": source_ref[:200]},
        )
    channel_ids = {channel.pk for channel in channels}
    wanted = NotificationChannel.objects.filter(pk__in=channel_ids, tenant=tenant, active=True).order_by("pk")
    ids: list[int] = []
    with transaction.atomic():
        for channel in wanted:
            try:
                # One savepoint per channel: a channel already notified for `source_ref` (by an
                # earlier run, or a concurrent one, whose insert this one waits for) fails alone.
                with transaction.atomic():
                    delivery = Delivery.objects.create(
                        tenant=tenant,
                        channel=channel,
                        message=message,
                        title=title[:TITLE_MAX_LENGTH],
                        context=dict(context),
                        source_ref=source_ref,
                    )
            except IntegrityError:
                continue
            ids.append(delivery.pk)
        if ids:
            transaction.on_commit(lambda: delivery_attempt_enqueue(ids), robust=True)
    return ids

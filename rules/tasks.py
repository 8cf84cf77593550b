"""Celery tasks of the rules app: thin, idempotent adapters over the services (CONVENTIONS 7)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from rules import services
from rules.models import DeliveryStatus


@shared_task(acks_late=True, reject_on_worker_lost=True, max_retries=5, default_retry_delay=5)
def evaluate_events(event_ids: list[int]) -> dict[str, int]:
    """Evaluates one batch of stored events (safe to run twice: see `events_evaluate`)."""
    report = services.events_evaluate(event_ids=event_ids)
    return {"events": report.events, "matches": report.matches, "deliveries": report.deliveries}


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: int) -> str:
    """One attempt at a delivery; schedules the next one itself after a failure."""
    delivery = services.delivery_attempt(delivery_id=delivery_id)
    if delivery is None:
        return "not-due"  # sent already, another worker holds it, or dead: nothing to do
    # Failed, or handed back unsent while its receiver asked for a pause: next attempt then.
    if delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.PENDING):
        countdown = max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
        deliver.apply_async((delivery_id,), countdown=countdown)
    return str(delivery.status)


@shared_task
def sweep_deliveries() -> int:
    """Re-queues deliveries whose task was lost; the claim keeps a duplicate from sending twice."""
    due = services.deliveries_due()
    for delivery_id in due:
        deliver.delay(delivery_id)
    return len(due)


@shared_task
def sweep_events() -> int:
    """Re-queues events stored over two minutes ago and still not evaluated."""
    ids = services.events_unevaluated(older_than=timedelta(minutes=2))
    for start in range(0, len(ids), services.EVALUATION_BATCH):
        evaluate_events.delay(ids[start : start + services.EVALUATION_BATCH])
    return len(ids)

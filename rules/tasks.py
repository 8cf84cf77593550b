"""Celery tasks of the rules app: thin adapters that take ids and run one service (CONVENTIONS 7).

Each task carries the name of the service it runs (``events_evaluate``, ``delivery_attempt``).
Services queue work through the ``*_enqueue`` helpers below, after their transaction commits;
this module imports the services only inside the task bodies, so the two never import each
other at load time (HackSoft's arrangement).

Queues (``CELERY_TASK_QUEUES`` / ``CELERY_TASK_ROUTES`` in the settings): ``delivery_attempt``
goes to the ``deliveries`` queue, so a burst of evaluations cannot hold notifications up behind
it; everything else uses the default queue. A worker started without ``-Q`` consumes both; a
worker started with ``-Q deliveries`` only sends.

Retries: a task that meets a transient error of the database or the broker (a restart, a
failover, a dropped connection) runs again after 1, 2, 4, 8, 16 s (each with jitter), at most
``MAX_RETRIES`` times. Both tasks are safe to run twice (see their services); any other error is
the service's to record. The sweeps do not retry: the next beat runs them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from rules import selectors
from rules.models import DeliveryStatus

# Events per evaluation task: big enough to amortise loading the rules, small enough to retry.
EVALUATION_BATCH = 100
# An event still unevaluated this long after it was stored has lost its task.
EVENTS_SWEEP_AGE = timedelta(minutes=2)
MAX_RETRIES = 5

_RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError, BrokerOperationalError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": MAX_RETRIES,
}


@shared_task(name="rules.tasks.events_evaluate", acks_late=True, reject_on_worker_lost=True, **_RETRY_TRANSIENT)
def events_evaluate(event_ids: list[int]) -> dict[str, int]:
    """Runs ``services.events_evaluate`` on one batch of stored event ids (at most
    EVALUATION_BATCH). Safe to run twice. Returns ``{"events", "matches", "deliveries"}`` counts."""
    from rules import services

    report = services.events_evaluate(event_ids=event_ids)
    return {"events": report.events, "matches": report.matches, "deliveries": report.deliveries}


@shared_task(name="rules.tasks.delivery_attempt", acks_late=True, reject_on_worker_lost=True, **_RETRY_TRANSIENT)
def delivery_attempt(delivery_id: int) -> str:
    """Runs ``services.delivery_attempt`` once and, when the delivery is to be tried again (failed,
    or handed back unsent while its receiver asked for a pause), queues the next attempt for its
    ``next_attempt_at``. Returns the delivery's status, or ``"not-due"`` when it was not this
    task's to send (sent already, held by another worker, or dead)."""
    from rules import services

    delivery = services.delivery_attempt(delivery_id=delivery_id)
    if delivery is None:
        return "not-due"
    if delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.PENDING):
        countdown = max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
        delivery_attempt_enqueue([delivery_id], countdown=countdown)
    return str(delivery.status)


@shared_task(name="rules.tasks.deliveries_sweep")
def deliveries_sweep() -> int:
    """Re-queues claimable deliveries whose task was lost (``selectors.deliveries_due``); the claim
    keeps a duplicate task from sending twice. Returns how many were queued."""
    due = selectors.deliveries_due()
    delivery_attempt_enqueue(due)
    return len(due)


@shared_task(name="rules.tasks.events_sweep")
def events_sweep() -> int:
    """Re-queues the evaluation of events stored over EVENTS_SWEEP_AGE ago and still not
    evaluated (``selectors.events_unevaluated``). Returns how many events."""
    ids = selectors.events_unevaluated(older_than=EVENTS_SWEEP_AGE)
    events_evaluate_enqueue(ids)
    return len(ids)


def events_evaluate_enqueue(event_ids: Sequence[int]) -> None:
    """Queues ``events_evaluate`` for stored events, EVALUATION_BATCH ids per task. Called once
    the events are committed (``transaction.on_commit``), so the worker finds them."""
    for start in range(0, len(event_ids), EVALUATION_BATCH):
        events_evaluate.delay(list(event_ids[start : start + EVALUATION_BATCH]))


def delivery_attempt_enqueue(delivery_ids: Iterable[int], *, countdown: float = 0.0) -> None:
    """Queues one ``delivery_attempt`` per delivery id, ``countdown`` seconds from now (0: at
    once), on the deliveries queue (the route follows the task's name, whoever queues it)."""
    for delivery_id in delivery_ids:
        delivery_attempt.apply_async((delivery_id,), countdown=countdown or None)

"""Celery tasks of the monitors app: thin adapters that take ids and run one service (CONVENTIONS 7)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

# --- scheduling and checks (the scheduler part) ----------------------------------------------------


# --- alerts (the alerts part) ------------------------------------------------------------------------
#
# Kept below the scheduling tasks: the two parts of issue 11 are written side by side.
# Services are imported inside the task bodies (as in rules.tasks), so services may import the
# ``*_enqueue`` helpers here without an import cycle.

# A transient error of the database or the broker: run again after 1, 2, 4... s (with jitter).
_ALERTS_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError, BrokerOperationalError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="monitors.tasks.flip_alert", acks_late=True, reject_on_worker_lost=True, **_ALERTS_RETRY)
def flip_alert(flip_id: int) -> str:
    """Runs ``alerts.flip_alert`` on one flip: claims it once and sends its alert and event.
    Safe to run twice. Returns what happened (``"alerted"``, ``"held"``, ``"claimed"``...)."""
    from monitors import alerts

    return alerts.flip_alert(flip_id=flip_id)


def flips_alert_enqueue(flip_ids: Iterable[int]) -> None:
    """Queues ``flip_alert`` for each flip id; called once the flips are committed."""
    for flip_id in flip_ids:
        flip_alert.delay(flip_id)


@shared_task(name="monitors.tasks.flips_sweep")
def flips_sweep() -> int:
    """Re-queues flips still unprocessed a minute after they were written (their task was lost);
    the claim keeps a duplicate from alerting twice. Returns how many were queued."""
    from monitors import alerts

    ids = alerts.flips_unprocessed()
    flips_alert_enqueue(ids)
    return len(ids)


@shared_task(name="monitors.tasks.reminders_send")
def reminders_send() -> int:
    """Every minute (beat): reminders for monitors still down (``alerts.reminders_send``).
    Returns how many monitors were reminded."""
    from monitors import alerts

    return alerts.reminders_send()


@shared_task(name="monitors.tasks.cert_warnings_check")
def cert_warnings_check() -> int:
    """Periodically (beat): TLS certificate expiry warnings, once per certificate
    (``alerts.cert_warnings_check`` over every monitor with a known expiry). Returns how many."""
    from monitors import alerts

    return alerts.cert_warnings_check()

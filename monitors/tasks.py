"""Celery tasks of the monitors app: thin adapters that take ids and run one service (CONVENTIONS 7)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from celery import shared_task, signals
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from core.conf import sentinel_settings
from monitors.checks import CheckPipeline, history_prune
from monitors.scheduler import Claim, monitors_claim

# --- scheduling and checks (the scheduler part) ----------------------------------------------------

# How long a stopping worker waits for the checks it holds to finish and be written (seconds); a
# check still running after it is dropped and its claim lapses.
PIPELINE_DRAIN_SECONDS = 15.0

_pipeline_lock = threading.Lock()
_pipeline: CheckPipeline | None = None


def check_pipeline() -> CheckPipeline:
    """This process's check pipeline, started on first use (after a prefork worker's fork, each
    child starts its own: an event loop and its threads do not survive a fork)."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None or _pipeline.pid != os.getpid():
            from core.egress_django import egress_policy
            from monitors.engine.runner import CheckRunner

            conf = sentinel_settings.monitors
            _pipeline = CheckPipeline(
                runner_factory=lambda: CheckRunner(
                    egress=egress_policy(), concurrency=conf.CHECK_CONCURRENCY, on_egress_denied=_egress_refused
                ),
                write_rows=conf.WRITE_BATCH_ROWS,
                flush_seconds=conf.WRITE_FLUSH_SECONDS,
                on_flips=flips_alert_enqueue,
            )
        return _pipeline


def _egress_refused(spec: Any, denied: Any) -> None:
    """A check's connection the egress policy refused: logged and counted like a route's or a
    channel's (sentinel_egress_refusals_total{kind="monitor", stage="connect"})."""
    from core.egress_django import egress_refusal_record

    egress_refusal_record(kind="monitor", stage="connect", tenant=None, target=spec.target, denied=denied)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _pipeline_close(**_: Any) -> None:
    """A stopping worker (or prefork child) finishes and writes the checks it holds first."""
    global _pipeline
    with _pipeline_lock:
        pipeline, _pipeline = _pipeline, None
    if pipeline is not None and pipeline.pid == os.getpid():
        pipeline.close(timeout=PIPELINE_DRAIN_SECONDS)


@shared_task(name="monitors.tasks.checks_dispatch")
def checks_dispatch() -> int:
    """Claims the monitors due within DISPATCH_LOOKAHEAD_SECONDS (``monitors.scheduler``) and
    queues them to ``checks_run`` in batches of BATCH_SIZE (settings ``SENTINEL_MONITORS``).
    Each batch expires when its first claim does: a batch taken later would run checks whose
    monitors may already be claimed again. Returns the number of checks claimed."""
    conf = sentinel_settings.monitors
    claims = monitors_claim(
        now=timezone.now(),
        lookahead_seconds=conf.DISPATCH_LOOKAHEAD_SECONDS,
        margin_seconds=conf.CLAIM_MARGIN_SECONDS,
        limit=conf.DISPATCH_MAX_CLAIMS,
    )
    for start in range(0, len(claims), conf.BATCH_SIZE):
        batch = claims[start : start + conf.BATCH_SIZE]
        checks_run.apply_async(
            args=[[claim.as_message() for claim in batch]],
            expires=min(claim.claimed_until for claim in batch),
        )
    return len(claims)


@shared_task(name="monitors.tasks.checks_run")
def checks_run(claims: list[list[object]]) -> int:
    """Hands a batch of claimed checks (``Claim.as_message`` lists) to this process's check
    pipeline and returns at once with how many were handed over: the checks run at their due
    times on the pipeline's event loop and are written by its writer thread."""
    return check_pipeline().submit([Claim.from_message(message) for message in claims])


@shared_task(name="monitors.tasks.checks_retention")
def checks_retention() -> dict[str, int]:
    """Deletes check results and roll-ups past their retention (``checks.history_prune``)."""
    return history_prune(now=timezone.now())


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

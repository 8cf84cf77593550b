"""The rules tasks as Celery sees them: registered under their services' names, deliveries routed
to a queue of their own that a worker started without -Q consumes, retries on transient errors.

That a real worker does consume both queues is shown end to end by test_delivery_e2e.py."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from rules import tasks
from sentinel_site.celery import app as celery_app


def test_the_rules_beat_entries_name_registered_tasks() -> None:
    celery_app.loader.import_default_modules()
    schedule = celery_app.conf.beat_schedule

    named = {key: entry["task"] for key, entry in schedule.items() if key.startswith("rules-")}

    assert named == {
        "rules-deliveries-sweep": tasks.deliveries_sweep.name,
        "rules-events-sweep": tasks.events_sweep.name,
    }
    assert set(named.values()) <= set(celery_app.tasks)


def test_deliveries_have_their_own_queue_and_evaluations_the_default_one() -> None:
    router = celery_app.amqp.router

    delivery_queue = router.route({}, tasks.delivery_attempt.name)["queue"].name
    evaluation_queue = router.route({}, tasks.events_evaluate.name)["queue"].name

    assert delivery_queue == "deliveries"
    assert evaluation_queue == celery_app.conf.task_default_queue
    # A worker without -Q consumes every declared queue.
    assert {delivery_queue, evaluation_queue} <= set(celery_app.amqp.queues)


def test_the_service_tasks_retry_transient_database_and_broker_errors_with_backoff() -> None:
    for task in (tasks.events_evaluate, tasks.delivery_attempt):
        assert set(task.autoretry_for) == {OperationalError, InterfaceError, BrokerOperationalError}
        assert (task.retry_backoff, task.retry_jitter, task.max_retries) == (True, True, tasks.MAX_RETRIES)

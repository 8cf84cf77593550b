"""The monitors' scheduling tasks as Celery sees them: beat entries naming registered tasks, the
dispatch expiring within its period, checks on a queue of their own that a worker without -Q
consumes. That a real beat and real workers run them is shown by test_monitors_e2e.py."""

from __future__ import annotations

from django.conf import settings

from monitors import tasks
from sentinel_site.celery import app as celery_app


def test_the_monitors_beat_entries_name_registered_tasks_and_the_dispatch_expires_within_its_period() -> None:
    celery_app.loader.import_default_modules()
    schedule = celery_app.conf.beat_schedule

    named = {key: entry["task"] for key, entry in schedule.items() if key.startswith("monitors-")}
    dispatch = schedule["monitors-dispatch"]

    # The alerts part has entries of its own under the same prefix.
    assert (named["monitors-dispatch"], named["monitors-retention"]) == (
        tasks.checks_dispatch.name,
        tasks.checks_retention.name,
    )
    assert set(named.values()) <= set(celery_app.tasks)
    assert dispatch["schedule"] == settings.SENTINEL_MONITORS["DISPATCH_SECONDS"]
    assert dispatch["options"]["expires"] == dispatch["schedule"]


def test_checks_have_their_own_queue_that_a_worker_without_q_consumes() -> None:
    router = celery_app.amqp.router

    queues = {router.route({}, task.name)["queue"].name for task in (tasks.checks_dispatch, tasks.checks_run)}

    assert queues == {"checks"}
    assert router.route({}, "rules.tasks.events_evaluate")["queue"].name == celery_app.conf.task_default_queue
    assert "checks" in set(celery_app.amqp.queues)

"""The Celery app with a real worker process on the configured broker (filesystem or Redis)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from observability.models import Heartbeat
from observability.selectors import heartbeat_last
from observability.tasks import heartbeat
from sentinel_site.celery import app as celery_app
from tests.support.processes import child_env, python_command, running_process
from tests.support.waiting import wait_until


def test_tasks_of_every_app_are_autodiscovered() -> None:
    celery_app.loader.import_default_modules()

    assert "observability.tasks.heartbeat" in celery_app.tasks


def test_the_beat_schedule_sends_the_heartbeat() -> None:
    assert celery_app.conf.beat_schedule["observability-heartbeat"]["task"] == "observability.tasks.heartbeat"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_queued_task_and_health_sees_it() -> None:
    # A queue of the test's own, so a worker of `make run` on this machine cannot take the task.
    queue = f"test-{uuid.uuid4().hex[:8]}"
    before = Client().get("/health").json()["components"]["worker"]
    command = python_command(
        "-m", "celery", "-A", "sentinel_site", "worker", "-Q", queue, "--pool", "solo",
        "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "warning",
    )  # fmt: skip
    with running_process(command, env=child_env(), name="celery worker"):
        heartbeat.apply_async(queue=queue)

        wait_until(lambda: Heartbeat.objects.exists(), timeout=30, what="the worker to record a heartbeat")
        health = Client().get("/health")

    assert heartbeat_last() is not None
    # /health saw no worker before, and sees this one's heartbeat now, fresh
    assert before["status"] == "unknown"
    assert health.status_code == 200
    worker = health.json()["components"]["worker"]
    assert worker["status"] == "ok", worker
    assert worker["last_heartbeat_seconds"] >= 0  # "ok": within the staleness limit

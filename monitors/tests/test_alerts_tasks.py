"""The alerts' Celery tasks as Celery sees them: beat entries naming registered tasks, retries
of transient errors, and the sweep's re-queue of a flip whose task was lost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from accounts.models import Tenant
from monitors import tasks
from monitors.models import Flip, Monitor, MonitorState
from sentinel_site.celery import app as celery_app


def test_the_alerts_beat_entries_name_registered_tasks() -> None:
    celery_app.loader.import_default_modules()
    schedule = celery_app.conf.beat_schedule

    named = {
        key: schedule[key]["task"] for key in ("monitors-flips-sweep", "monitors-reminders", "monitors-cert-warnings")
    }

    assert named == {
        "monitors-flips-sweep": tasks.flips_sweep.name,
        "monitors-reminders": tasks.reminders_send.name,
        "monitors-cert-warnings": tasks.cert_warnings_check.name,
    }
    assert set(named.values()) <= set(celery_app.tasks)
    assert schedule["monitors-reminders"]["schedule"] == 60.0


def test_flip_alert_retries_transient_database_and_broker_errors() -> None:
    task = tasks.flip_alert
    assert set(task.autoretry_for) == {OperationalError, InterfaceError, BrokerOperationalError}
    assert (task.acks_late, task.reject_on_worker_lost) == (True, True)


@pytest.mark.django_db
def test_the_sweep_requeues_only_flips_older_than_a_minute_and_unprocessed(tenant_a: Tenant) -> None:
    shop = Monitor.objects.create(tenant=tenant_a, name="shop", target="https://shop.example/")
    now = timezone.now()
    for minutes, processed in ((2, False), (0, False), (5, True)):
        Flip.objects.create(
            tenant=tenant_a,
            monitor=shop,
            old_state=MonitorState.UP,
            new_state=MonitorState.DOWN,
            created_at=now - timedelta(minutes=minutes),
            processed_at=now if processed else None,
        )

    assert tasks.flips_sweep() == 1

"""A monitor's flip, end to end: queued by a real process, claimed by real Celery workers, sent
through the rules delivery machinery to a real local sink, and emitted as an event the rules
engine matches. Exactly one alert per channel however many workers run the flip's task."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections
from django.utils import timezone

from accounts.models import Tenant, User
from monitors import alerts
from monitors.models import Flip, Monitor, MonitorState
from rules import services as rules_services
from rules.models import Delivery, DeliveryStatus, Event
from rules.tests.sinks import http_sink
from tests.support.processes import celery_worker, child_env, python_command
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for this test's processes: their own broker queue and var folder."""
    yield {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("monitor-alerts"),
        "CELERY_POLL_INTERVAL": "0.05",
        "DELIVERY_BACKOFF_SECONDS": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def enqueue_from_another_process(flip_id: int, times: int, env: dict[str, str]) -> None:
    """Queues the flip's task `times` times from a real Sentinel process on the test's broker, as
    the scheduler does (and as a redelivery or the sweep would, again)."""
    code = f"from monitors.tasks import flips_alert_enqueue; flips_alert_enqueue([{flip_id}] * {times})"
    done = subprocess.run(
        python_command("manage.py", "shell", "-c", code),
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def in_two_threads(work: Callable[[], None]) -> None:
    """Runs `work` in two threads released at once, each on its own database connection."""
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait(timeout=10)
            work()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def down_flip(monitor: Monitor) -> Flip:
    Monitor.objects.filter(pk=monitor.pk).update(state=MonitorState.DOWN)
    return Flip.objects.create(
        tenant=monitor.tenant,
        monitor=monitor,
        old_state=MonitorState.UP,
        new_state=MonitorState.DOWN,
        reason="connection refused",
    )


def test_a_flip_run_by_two_workers_alerts_each_channel_once_and_its_event_reaches_the_rules(
    alice: User, isolated: dict[str, str]
) -> None:
    tenant = alice.membership.tenant
    with http_sink() as hooks, http_sink() as slack:
        signed = rules_services.channel_create(
            tenant=tenant, kind="webhook", name="oncall", target=hooks.url + "/a", secret="k3y"
        )
        plain = rules_services.channel_create(tenant=tenant, kind="webhook", name="audit", target=hooks.url + "/b")
        rules_services.channel_create(tenant=tenant, kind="slack", name="#ops", target=slack.url)
        rules_services.rule_create(
            tenant=tenant,
            name="monitors down",
            dsl='when event.type == "monitor.down" then notify("slack:#ops", "{monitor.name} down")',
        )
        shop = Monitor.objects.create(tenant=tenant, name="shop", target="https://shop.example/health")
        shop.channels.add(signed, plain)
        flip = down_flip(shop)

        with celery_worker(name="alerts-1", **isolated), celery_worker(name="alerts-2", **isolated):
            enqueue_from_another_process(flip.pk, 4, isolated)
            wait_until(lambda: hooks.count() >= 2 and slack.count() >= 1, timeout=60, what="the alerts and the rule")
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 3, timeout=30, what="sent"
            )

    assert sorted(request.path for request in hooks.received) == ["/a", "/b"]
    assert Delivery.objects.filter(match=None, source_ref=f"monitor-flip:{flip.pk}").count() == 2
    signed_request = next(request for request in hooks.received if request.path == "/a")
    expected = "sha256=" + hmac.new(b"k3y", signed_request.body, hashlib.sha256).hexdigest()
    assert signed_request.headers["x-sentinel-signature"] == expected
    assert json.loads(signed_request.body)["alert"]["title"] == "shop is down"
    assert json.loads(slack.received[0].body) == {"text": "shop down"}
    assert Event.objects.get().payload["monitor"]["name"] == "shop"
    assert Flip.objects.get().processed_at is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_two_threads_claiming_one_flip_send_one_delivery_per_channel(tenant_a: Tenant) -> None:
    channels = [
        rules_services.channel_create(tenant=tenant_a, kind="webhook", name=f"c{n}", target=f"https://h{n}.example/")
        for n in range(3)
    ]
    shop = Monitor.objects.create(tenant=tenant_a, name="shop", target="https://shop.example/health")
    shop.channels.add(*channels)
    flip = down_flip(shop)
    outcomes: list[str] = []

    def run() -> None:
        outcomes.append(alerts.flip_alert(flip_id=flip.pk))

    in_two_threads(run)

    assert sorted(outcomes) == ["alerted", "claimed"]
    assert sorted(Delivery.objects.values_list("channel_id", flat=True)) == sorted(c.pk for c in channels)
    assert Event.objects.filter(type="monitor.down").count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_two_beats_sending_reminders_at_once_remind_once(tenant_a: Tenant) -> None:
    channel = rules_services.channel_create(tenant=tenant_a, kind="webhook", name="c", target="https://h.example/")
    shop = Monitor.objects.create(
        tenant=tenant_a, name="shop", target="https://shop.example/health", reminder_interval_seconds=600
    )
    shop.channels.add(channel)
    flip = down_flip(shop)
    Flip.objects.filter(pk=flip.pk).update(created_at=timezone.now() - timedelta(hours=1), processed_at=timezone.now())
    Monitor.objects.filter(pk=shop.pk).update(state_changed_at=timezone.now() - timedelta(hours=1))
    counts: list[int] = []

    in_two_threads(lambda: counts.append(alerts.reminders_send()))

    assert sorted(counts) == [0, 1]
    assert Delivery.objects.filter(source_ref__startswith=f"monitor-reminder:{shop.pk}:").count() == 1

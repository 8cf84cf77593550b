"""Monitors end to end: two real beats and two real Celery workers run the checks of a monitor
against a real local HTTP server whose answer the test flips from 200 to 500 and back.

Checks are made due by setting ``next_due_at`` to now (the interval stays at its 10 s minimum, so
no check falls due by itself during the test): each forced check must run exactly once, the
monitor must go down at exactly its failure threshold and up at exactly its success threshold,
with one flip each way, although two dispatchers claim and two workers run checks; and the down
and the recovery each reach the monitor's webhook channel (a real local sink) exactly once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant, Tier
from monitors.models import CheckResult, Flip, Monitor
from rules import services as rules_services
from rules.models import Delivery, DeliveryStatus
from rules.tests.sinks import http_sink
from tests.support.processes import celery_worker
from tests.support.redis_keys import lasting_key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Target:
    """A local HTTP server answering GET with ``status``; counts the requests it answered."""

    def __init__(self) -> None:
        self.status = 200
        self.requests = 0
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with target._lock:
                    target.requests += 1
                    status = target.status
                body = b"ok" if status == 200 else b"broken"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    served = Target()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture(scope="module")
def workers(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Two workers, each with a beat of its own (its schedule file in the module's temporary
    folder), on a broker of their own; the dispatcher beats every 0.2 s."""
    folder: Path = tmp_path_factory.mktemp("monitors-e2e")
    env = {
        "SENTINEL_VAR_DIR": str(folder),
        "CACHE_KEY_PREFIX": lasting_key_prefix("monitors-e2e"),
        "CELERY_POLL_INTERVAL": "0.05",
        "MONITORS_DISPATCH_SECONDS": "0.2",
        "MONITORS_WRITE_FLUSH_SECONDS": "0.05",
        "DELIVERY_BACKOFF_SECONDS": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
    }
    (folder / "metrics").mkdir()
    with (
        celery_worker(name="checks-1", concurrency=2, beat=True, **env),
        celery_worker(name="checks-2", concurrency=2, beat=True, **env),
    ):
        yield


def check_once(monitor: Monitor, results_before: int) -> Monitor:
    """Makes `monitor`'s next check due now and waits until it is written; the monitor after it."""
    assert Monitor.objects.filter(pk=monitor.pk, claimed_until__isnull=True).update(next_due_at=timezone.now()) == 1
    wait_until(
        lambda: (
            Monitor.objects.filter(pk=monitor.pk, claimed_until__isnull=True).exists()
            and CheckResult.objects.filter(monitor=monitor).count() > results_before
        ),
        timeout=30,
        what=f"check {results_before + 1} to be written",
    )
    return Monitor.objects.get(pk=monitor.pk)


def test_a_monitor_goes_down_at_its_failure_threshold_and_up_at_its_success_threshold_with_one_flip_each_way(
    workers: None, target: Target
) -> None:
    tenant = Tenant.objects.create(name="Wonderland", slug="wonderland", tier=Tier.STANDARD)
    far = timezone.now() + timedelta(hours=1)
    with http_sink() as sink:
        channel = rules_services.channel_create(tenant=tenant, kind="webhook", name="oncall", target=sink.url)
        monitor = Monitor.objects.create(
            tenant=tenant,
            name="health",
            target=target.url,
            interval_seconds=10,
            timeout_seconds=5,
            failure_threshold=3,
            success_threshold=2,
            next_due_at=far,
        )
        monitor.channels.add(channel)
        script = [(200, "unknown"), (200, "up"), (500, "up"), (500, "up"), (500, "down"), (200, "down"), (200, "up")]

        states = []
        for n, (status, _) in enumerate(script):
            target.status = status
            monitor = check_once(monitor, n)
            states.append(monitor.state)

        # unknown -> up alerts nobody (a new monitor); the down and the recovery alert once each.
        wait_until(
            lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 2, timeout=30, what="two alerts"
        )
        wait_until(lambda: sink.count() >= 2, timeout=10, what="the sink to receive both alerts")
        alerts = [json.loads(request.body)["alert"] for request in sink.received]

    flips = list(Flip.objects.filter(monitor=monitor).order_by("id").values_list("old_state", "new_state", "reason"))
    assert states == [state for _, state in script]
    assert flips == [
        ("unknown", "up", ""),
        ("up", "down", "status 500, expected 200-299"),
        ("down", "up", ""),
    ]
    # Each forced check ran once, though two dispatchers claim and two workers run checks.
    assert CheckResult.objects.filter(monitor=monitor).count() == len(script) == target.requests
    assert [alert["title"] for alert in alerts] == ["health is down", "health is up"]
    assert Delivery.objects.count() == 2

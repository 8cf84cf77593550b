"""`make run`'s demo end to end: the seeded demo monitor is checked by a real worker and beat
against the real mock upstream, and what the checks wrote reaches the status page, its JSON
twin and `/metrics` as a visitor and a scraper see them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from monitors.models import CheckResult, Monitor, MonitorState
from monitors.tests.status_support import forget_status_pages, today
from tests.support.processes import MockUpstreams, celery_worker
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_cached_status_pages() -> Iterator[None]:
    forget_status_pages()
    yield
    forget_status_pages()


def test_the_demo_monitor_is_checked_and_shown_up_on_the_status_page(
    mock_upstream: MockUpstreams, settings: Any, tmp_path: Path
) -> None:
    upstream = mock_upstream("demo")
    settings.VAR_DIR = tmp_path
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": upstream.url}
    for command in ("seed_demo", "seed_demo_rules", "seed_demo_monitors"):
        call_command(command, stdout=io.StringIO())
    demo = Monitor.objects.get()
    env = {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("status-e2e"),
        "CELERY_POLL_INTERVAL": "0.05",
        "MONITORS_DISPATCH_SECONDS": "0.2",
        "MONITORS_WRITE_FLUSH_SECONDS": "0.05",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()

    with celery_worker(name="status-e2e", concurrency=1, beat=True, **env):
        # Two checks (the success threshold) without waiting out the 30 s interval: the second
        # is made due as soon as the first is written and its claim released.
        for written in range(2):
            wait_until(
                lambda: Monitor.objects.filter(pk=demo.pk, claimed_until__isnull=True).exists(),
                timeout=30,
                what="the demo monitor's claim to be released",
            )
            Monitor.objects.filter(pk=demo.pk).update(next_due_at=timezone.now())
            wait_until(
                lambda written=written: CheckResult.objects.filter(monitor=demo).count() > written,
                timeout=30,
                what=f"check {written + 1} of the demo monitor",
            )
        wait_until(lambda: Monitor.objects.get(pk=demo.pk).state == MonitorState.UP, timeout=30, what="up")

    page = Client().get("/status/globex/").content.decode()
    twin = Client().get("/status/globex/status.json").json()
    metrics = Client().get("/metrics").content.decode().splitlines()

    assert "All systems operational" in page
    assert '<span class="state state-up">up</span>' in page
    assert f'<i class="ok" title="{today():%Y-%m-%d}: 100.00% up"></i></div>' in page  # today, last
    assert twin["monitors"][0]["state"] == "up"
    assert twin["monitors"][0]["uptime_24h"] == twin["monitors"][0]["uptime_30d"] == 100.0
    assert "sentinel_monitors_up 1.0" in metrics

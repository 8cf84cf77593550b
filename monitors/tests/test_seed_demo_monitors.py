"""`seed_demo_monitors` (`make seed` / `make run`): the demo monitor of the mock upstream's /health."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from monitors.models import Monitor
from monitors.tests.status_support import forget_status_pages

pytestmark = pytest.mark.django_db

UPSTREAM = "http://127.0.0.1:18080"


@pytest.fixture(autouse=True)
def _no_cached_status_pages() -> Iterator[None]:
    forget_status_pages()
    yield
    forget_status_pages()


@pytest.fixture
def seeded_tenant(settings: Any) -> None:
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": UPSTREAM}
    call_command("seed_demo", stdout=io.StringIO())


def test_the_demo_monitor_is_created_once_published_and_alerting_the_demo_channel(seeded_tenant: None) -> None:
    call_command("seed_demo_rules", stdout=io.StringIO())
    call_command("seed_demo_monitors", "--follow-downstream", stdout=(first := io.StringIO()))
    call_command("seed_demo_monitors", "--follow-downstream", stdout=(second := io.StringIO()))

    monitor = Monitor.objects.get()
    assert monitor.tenant.slug == "globex"
    assert monitor.target == f"{UPSTREAM}/health"
    assert monitor.published and monitor.enabled
    assert [channel.name for channel in monitor.channels.all()] == ["demo-sink"]
    assert "/status/globex/" in first.getvalue() and "exists" in second.getvalue()
    page = Client().get("/status/globex/status.json")
    assert page.status_code == 200 and [m["name"] for m in page.json()["monitors"]] == [monitor.name]


def test_without_the_demo_channel_the_monitor_alerts_nobody_and_says_so(seeded_tenant: None) -> None:
    call_command("seed_demo_monitors", stdout=(out := io.StringIO()))

    assert list(Monitor.objects.get().channels.all()) == []
    assert "no demo channel" in out.getvalue()


def test_a_run_on_another_port_moves_the_demo_monitor_but_not_a_target_someone_set(
    seeded_tenant: None, settings: Any
) -> None:
    call_command("seed_demo_monitors", stdout=io.StringIO())
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": "http://127.0.0.1:18180"}

    call_command("seed_demo_monitors", "--follow-downstream", stdout=(out := io.StringIO()))

    assert Monitor.objects.get().target == "http://127.0.0.1:18180/health"
    assert "re-pointed" in out.getvalue()
    Monitor.objects.update(target="https://status.example.com/health")  # as an operator would have
    call_command("seed_demo_monitors", "--follow-downstream", stdout=io.StringIO())
    assert Monitor.objects.get().target == "https://status.example.com/health"


def test_without_the_demo_tenant_it_says_what_to_run_first(db: None) -> None:
    call_command("seed_demo_monitors", stdout=io.StringIO(), stderr=(errors := io.StringIO()))

    assert "seed_demo" in errors.getvalue()
    assert not Monitor.objects.exists()


def test_under_the_production_egress_policy_the_demo_monitor_is_skipped_with_the_reason(
    seeded_tenant: None, settings: Any
) -> None:
    settings.EGRESS_ALLOW_LOOPBACK = False  # production mode's default

    call_command("seed_demo_monitors", stdout=io.StringIO(), stderr=(errors := io.StringIO()))

    assert "not created" in errors.getvalue() and "loopback" in errors.getvalue()
    assert not Monitor.objects.exists()

"""The monitors' gauges read at scrape time, through the site's real `/metrics` view."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Tenant
from monitors.models import MonitorState
from monitors.tests.status_support import monitor

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape() -> Samples:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def certificate(samples: Samples, monitor_id: int, tenant: str) -> float | None:
    labels = frozenset({"monitor_id": str(monitor_id), "tenant": tenant}.items())
    return samples.get(("sentinel_monitor_certificate_days_remaining", labels))


@pytest.mark.django_db
def test_monitors_up_and_down_count_enabled_monitors_of_every_tenant(tenant_a: Tenant, tenant_b: Tenant) -> None:
    before = scrape()
    assert before[("sentinel_monitors_up", frozenset())] == 0
    assert before[("sentinel_monitors_down", frozenset())] == 0
    monitor(tenant_a, "a-up", state=MonitorState.UP)
    monitor(tenant_b, "b-up", state=MonitorState.UP, published=False)
    monitor(tenant_a, "a-down", state=MonitorState.DOWN)
    monitor(tenant_b, "b-down-disabled", state=MonitorState.DOWN, enabled=False)
    monitor(tenant_b, "b-maintenance", state=MonitorState.MAINTENANCE)

    after = scrape()

    assert after[("sentinel_monitors_up", frozenset())] == 2
    assert after[("sentinel_monitors_down", frozenset())] == 1


@pytest.mark.django_db
def test_certificate_days_remaining_per_enabled_monitor_that_saw_one(tenant_a: Tenant, tenant_b: Tenant) -> None:
    now = timezone.now()
    soon = monitor(tenant_a, "soon", cert_expires_at=now + timedelta(days=13, hours=12))
    expired = monitor(tenant_b, "expired", cert_expires_at=now - timedelta(days=2))
    plain = monitor(tenant_a, "plain http", target="http://example.com/")
    off = monitor(tenant_a, "disabled", enabled=False, cert_expires_at=now + timedelta(days=5))

    samples = scrape()

    assert certificate(samples, soon.pk, "wonderland") == pytest.approx(13.5, abs=0.01)
    assert certificate(samples, expired.pk, "evil") == pytest.approx(-2.0, abs=0.01)
    assert certificate(samples, plain.pk, "wonderland") is None
    assert certificate(samples, off.pk, "wonderland") is None

"""The fraud tile of the dashboard: the last hour's decisions, fail-open approvals and the unscored
backlog, the latest reviews and declines as rows, and nothing of another tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant
from core.tiles import DashboardScope, dashboard_tiles
from fraud.engine.transaction import Score
from fraud.services import transaction_rescore
from fraud.tests.conftest import Record
from fraud.tiles import fraud

pytestmark = pytest.mark.django_db


def figures(data: dict[str, object]) -> dict[str, object]:
    return {figure["label"]: figure["value"] for figure in data["figures"]}  # type: ignore[attr-defined]


@pytest.fixture
def ledger(tenant_a: Tenant, tenant_b: Tenant, record: Record) -> None:
    now = timezone.now()
    record(tenant_a, "a-ok", score=0.1)
    record(tenant_a, "a-review", score=0.6, decision="review", created_at=now - timedelta(minutes=2))
    record(tenant_a, "a-decline", score=0.97, decision="decline", created_at=now - timedelta(minutes=1))
    record(tenant_a, "a-old-decline", score=0.97, decision="decline", created_at=now - timedelta(hours=2))
    record(tenant_a, "a-open", score=None)
    late = record(tenant_a, "a-open-late", score=None)
    transaction_rescore(pk=late.pk, score=Score(0.2, (), "m-2"))
    record(tenant_b, "b-decline", score=0.99, decision="decline")
    record(tenant_b, "b-open", score=None)


def scope_of(tenant: Tenant) -> DashboardScope:
    return DashboardScope(tenant_uuid=str(tenant.uuid), tenant_slug=tenant.slug)


@pytest.mark.usefixtures("ledger")
def test_a_tenant_sees_its_hour_its_backlog_and_its_latest_flags(tenant_a: Tenant) -> None:
    data = fraud(scope_of(tenant_a))

    assert figures(dict(data)) == {
        "approved (1 h)": 3,
        "review (1 h)": 1,
        "declined (1 h)": 1,
        "fail-open (1 h)": 2,
        "unscored": 1,
    }
    assert [(row["label"], row["status"]) for row in data["rows"]] == [
        ("a-decline", "critical"),
        ("a-review", "warning"),
    ]
    assert data["rows"][0]["value"] == "decline 0.97 · 12.50 EUR"
    assert data["status"] == "warning"  # a backlog waits for the brain


@pytest.mark.usefixtures("ledger")
def test_another_tenants_transactions_never_show(tenant_b: Tenant) -> None:
    data = fraud(scope_of(tenant_b))

    assert [row["label"] for row in data["rows"]] == ["b-decline"]
    assert figures(dict(data))["unscored"] == 1 and figures(dict(data))["approved (1 h)"] == 1


@pytest.mark.usefixtures("ledger")
def test_the_fleet_view_names_the_tenant(tenant_a: Tenant) -> None:
    labels = [row["label"] for row in fraud(DashboardScope())["rows"]]

    assert labels[0] == "evil · b-decline" and "wonderland · a-decline" in labels


def test_an_empty_ledger_is_idle_and_listed(tenant_a: Tenant, django_assert_max_num_queries: object) -> None:
    with django_assert_max_num_queries(3):  # type: ignore[operator]
        data = fraud(scope_of(tenant_a))

    assert data["status"] == "idle" and data["rows"] == []
    assert data["empty"] == "No transaction in the last hour."
    assert fraud in dashboard_tiles()

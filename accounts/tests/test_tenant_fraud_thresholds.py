"""A tenant's fraud thresholds (SPEC 6), through each door: the service, the tenants API and the
admin, each refusing a review threshold above the decline one (a null one counts at its setting);
and a tenant with a fraud ledger, which is kept, cannot be deleted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import services
from accounts.models import Tenant, User
from accounts.tests.htmlforms import form_data
from core.errors import DomainError
from fraud.tests.conftest import record_tx

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


def test_the_service_sets_and_clears_the_thresholds(tenant_a: Tenant) -> None:
    services.tenant_update(tenant=tenant_a, fraud_review_threshold=0.3, fraud_decline_threshold=0.7)
    services.tenant_update(tenant=tenant_a, fraud_review_threshold=None)

    tenant_a.refresh_from_db()
    assert (tenant_a.fraud_review_threshold, tenant_a.fraud_decline_threshold) == (None, 0.7)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fraud_review_threshold": 0.8, "fraud_decline_threshold": 0.6}, "fraud_review_threshold"),
        ({"fraud_review_threshold": 0.95}, "fraud_review_threshold"),  # above the setting's 0.9
        ({"fraud_decline_threshold": 0.4}, "fraud_review_threshold"),  # below the setting's 0.5
        ({"fraud_decline_threshold": 1.5}, "fraud_decline_threshold"),
        ({"fraud_review_threshold": float("nan")}, "fraud_review_threshold"),
    ],
)
def test_the_service_refuses_review_above_decline_and_scores_outside_0_1(
    tenant_a: Tenant, changes: dict[str, float], field: str
) -> None:
    with pytest.raises(DomainError) as refused:
        services.tenant_update(tenant=tenant_a, **changes)

    assert field in refused.value.details
    tenant_a.refresh_from_db()
    assert tenant_a.fraud_review_threshold is None and tenant_a.fraud_decline_threshold is None


def test_an_update_is_checked_against_the_thresholds_already_stored(tenant_a: Tenant) -> None:
    services.tenant_update(tenant=tenant_a, fraud_review_threshold=0.2, fraud_decline_threshold=0.4)

    with pytest.raises(DomainError):
        services.tenant_update(tenant=tenant_a, fraud_review_threshold=0.45, fraud_decline_threshold=0.44)
    with pytest.raises(DomainError):
        services.tenant_update(tenant=tenant_a, fraud_review_threshold=0.5)


def test_the_api_shows_and_changes_the_thresholds(api: Api, staff: User, tenant_a: Tenant) -> None:
    url = f"/api/v1/tenants/{tenant_a.pk}"

    response = api(staff).patch(url, {"fraud_review_threshold": 0.4, "fraud_decline_threshold": 0.8}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["fraud_review_threshold"], response.json()["fraud_decline_threshold"]) == (0.4, 0.8)
    refused = api(staff).patch(url, {"fraud_review_threshold": 0.9}, format="json")
    assert refused.status_code == 400
    assert "fraud_review_threshold" in refused.json()["error"]["details"]
    assert api(staff).patch(url, {"fraud_decline_threshold": 2}, format="json").status_code == 400
    tenant_a.refresh_from_db()
    assert tenant_a.fraud_review_threshold == 0.4


def test_a_member_reads_the_thresholds_but_cannot_change_them(api: Api, bob: User, tenant_a: Tenant) -> None:
    url = f"/api/v1/tenants/{tenant_a.pk}"

    assert api(bob).get(url).json()["fraud_decline_threshold"] is None
    assert api(bob).patch(url, {"fraud_decline_threshold": 0.99}, format="json").status_code == 403


def test_the_admin_refuses_review_above_decline_on_the_field(staff_client: Client, tenant_a: Tenant) -> None:
    url = reverse("admin:accounts_tenant_change", args=[tenant_a.pk])
    data = form_data(staff_client.get(url).content.decode(), "tenant_form")
    data.update({"fraud_review_threshold": ["0.7"], "fraud_decline_threshold": ["0.6"]})

    refused = staff_client.post(url, data)

    assert refused.status_code == 200
    assert "Must not exceed the decline threshold (0.6)." in refused.content.decode()
    data.update({"fraud_review_threshold": ["0.3"]})
    assert staff_client.post(url, data).status_code == 302
    tenant_a.refresh_from_db()
    assert (tenant_a.fraud_review_threshold, tenant_a.fraud_decline_threshold) == (0.3, 0.6)


def test_a_tenant_with_a_fraud_ledger_is_not_deleted_but_refused_with_409(
    api: Api, staff: User, tenant_a: Tenant
) -> None:
    record_tx(tenant_a)

    response = api(staff).delete(f"/api/v1/tenants/{tenant_a.pk}")

    assert response.status_code == 409
    assert "deactivate" in response.json()["error"]["message"]
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()
    assert api(staff).patch(f"/api/v1/tenants/{tenant_a.pk}", {"active": False}, format="json").status_code == 200

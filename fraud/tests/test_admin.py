"""The ledger in the admin: read-only for everyone, superusers included; the list renders with its
filters and coloured decisions, the detail with its reasons readable."""

from __future__ import annotations

import pytest
from django.contrib.admin import site
from django.test import Client, RequestFactory

from accounts.models import Tenant, User
from fraud.models import Transaction
from fraud.tests.conftest import Record

pytestmark = pytest.mark.django_db

URL = "/admin/fraud/transaction/"


@pytest.fixture
def rows(tenant_a: Tenant, tenant_b: Tenant, record: Record) -> list[Transaction]:
    return [
        record(tenant_a, "tx-approve", score=0.1),
        record(tenant_a, "tx-decline", score=0.97, decision="decline", user_id="carder"),
        record(tenant_b, "tx-open", score=None),
    ]


def test_nobody_may_add_change_or_delete(staff: User) -> None:
    request = RequestFactory().get(URL)
    request.user = staff
    model_admin = site._registry[Transaction]

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert model_admin.has_view_permission(request)


def test_the_list_renders_with_its_filters_and_columns(
    staff_client: Client, rows: list[Transaction], django_assert_max_num_queries: object
) -> None:
    with django_assert_max_num_queries(8):  # type: ignore[operator]
        response = staff_client.get(URL)

    page = response.content.decode()
    assert response.status_code == 200
    for text in ("tx-approve", "tx-decline", "tx-open", "12.50 EUR", "0.970", "wonderland", "evil"):
        assert text in page
    assert 'style="color: #cf222e' in page  # the decline, red
    for filter_title in ("By decision", "By scored", "By tenant", "By late decision"):
        assert filter_title in page
    assert "Add transaction" not in page
    assert 'name="action"' not in page  # no "delete selected"


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("decision__exact=decline", "tx-decline", "tx-approve"),
        ("scored__exact=0", "tx-open", "tx-decline"),
        ("q=carder", "tx-decline", "tx-approve"),
        ("q=tx-open", "tx-open", "tx-decline"),
    ],
)
def test_filters_and_search(staff_client: Client, rows: list[Transaction], query: str, shown: str, hidden: str) -> None:
    page = staff_client.get(f"{URL}?{query}").content.decode()

    assert shown in page and hidden not in page


def test_the_detail_is_read_only_and_shows_the_reasons(staff_client: Client, rows: list[Transaction]) -> None:
    row = rows[1]

    response = staff_client.get(f"{URL}{row.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "<code>amount_vs_habit</code>" in page and "amount 14.2x the user&#x27;s usual" in page and "+1.250" in page
    assert 'type="submit"' not in page or 'name="_save"' not in page
    assert "count_total" in page


def test_a_post_to_the_detail_changes_nothing(staff_client: Client, rows: list[Transaction]) -> None:
    row = rows[1]

    response = staff_client.post(f"{URL}{row.pk}/change/", {"decision": "approve"})

    assert response.status_code == 403
    row.refresh_from_db()
    assert row.decision == "decline"
    assert staff_client.post(f"{URL}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Transaction.objects.filter(pk=row.pk).exists()

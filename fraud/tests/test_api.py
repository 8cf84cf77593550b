"""`GET /api/v1/transactions[/{transaction_id}]`: the tenant's ledger behind the wall, its filters
and their refusals, no write verbs, and the POST that only the hot path serves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from rest_framework import serializers
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from fraud.engine.transaction import Score
from fraud.models import Transaction
from fraud.selectors import created_at_text, transaction_answer
from fraud.services import transaction_rescore
from fraud.tests.conftest import Record

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LIST = "/api/v1/transactions"


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["transaction_id"] for item in response.json()["results"]]


@pytest.fixture
def ledger(tenant_a: Tenant, tenant_b: Tenant, record: Record) -> None:
    record(tenant_a, "a-1", created_at=T0, score=0.1)
    record(tenant_a, "a-2", created_at=T0 + timedelta(minutes=1), score=0.6, decision="review", user_id="u-2")
    record(tenant_a, "a-3", created_at=T0 + timedelta(minutes=2), score=0.95, decision="decline", currency="JPY",
           amount=Decimal("1000"))  # fmt: skip
    late = record(tenant_a, "a-4", created_at=T0 + timedelta(minutes=3), score=None)
    transaction_rescore(pk=late.pk, score=Score(0.97, (), "m-2"))
    record(tenant_b, "b-1", created_at=T0, score=0.1)


@pytest.mark.usefixtures("ledger")
class TestList:
    def test_newest_first_and_only_the_callers_tenant(self, api: Api, bob: User, mallory: User) -> None:
        assert ids(api(bob).get(LIST)) == ["a-4", "a-3", "a-2", "a-1"]
        assert ids(api(mallory).get(LIST)) == ["b-1"]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("decision=review", ["a-2"]),
            ("scored=false", ["a-4"]),
            # The fail-open approvals whose late score says decline: what an analyst looks at
            ("late_decision=decline", ["a-4"]),
            ("late_decision=review", []),
            ("scored=true&decision=approve", ["a-1"]),
            ("user_id=u-2", ["a-2"]),
            ("currency=jpy", ["a-3"]),
            ("since=2026-11-30T12:01:00Z&until=2026-11-30T12:03:00Z", ["a-3", "a-2"]),
        ],
    )
    def test_filters(self, api: Api, alice: User, query: str, expected: list[str]) -> None:
        assert ids(api(alice).get(f"{LIST}?{query}")) == expected

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("decison=review", "decison"),
            ("decision=maybe", "decision"),
            ("scored=yes", "scored"),
            ("late_decision=no", "late_decision"),
            ("since=yesterday", "since"),
            ("since=2026-11-30T13:00:00Z&until=2026-11-30T12:00:00Z", "until"),
            ("tenant=nobody", "tenant"),
            ("user_id=" + "x" * 65, "user_id"),
        ],
    )
    def test_bad_parameters_are_400_naming_them(self, api: Api, alice: User, query: str, field: str) -> None:
        response = api(alice).get(f"{LIST}?{query}")

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"
        assert field in response.json()["error"]["details"]

    def test_staff_see_every_tenant_and_filter_by_one(self, api: Api, staff: User) -> None:
        assert sorted(ids(api(staff).get(LIST))) == ["a-1", "a-2", "a-3", "a-4", "b-1"]
        assert ids(api(staff).get(f"{LIST}?tenant=evil")) == ["b-1"]

    def test_a_tenant_cannot_filter_its_way_into_another(self, api: Api, bob: User) -> None:
        assert ids(api(bob).get(f"{LIST}?tenant=evil")) == []

    def test_pages(self, api: Api, bob: User) -> None:
        body = api(bob).get(f"{LIST}?page_size=3").json()

        assert body["count"] == 4 and len(body["results"]) == 3 and body["next"]


@pytest.mark.usefixtures("ledger")
class TestDetail:
    def test_the_detail_extends_the_answer_of_post(self, api: Api, bob: User, tenant_a: Tenant) -> None:
        response = api(bob).get(f"{LIST}/a-3")

        assert response.status_code == 200
        body = response.json()
        row = Transaction.objects.get(tenant=tenant_a, transaction_id="a-3")
        assert {name: body[name] for name in transaction_answer(row)} == transaction_answer(row)
        assert body["created_at"] == "2026-11-30T12:02:00Z"
        assert (body["amount"], body["currency"], body["user_id"]) == ("1000", "JPY", "user-1")
        assert body["decision"] == "decline" and body["late_decision"] == "" and body["rescored_at"] is None
        assert body["reasons"][0] == {"code": "amount_vs_habit", "message": "amount 14.2x the user's usual",
                                      "contribution": 1.25}  # fmt: skip

    def test_amounts_keep_the_currencys_minor_units(self, api: Api, bob: User) -> None:
        assert api(bob).get(f"{LIST}/a-1").json()["amount"] == "12.50"

    def test_another_tenants_transaction_is_404(self, api: Api, bob: User, mallory: User) -> None:
        response = api(mallory).get(f"{LIST}/a-1")

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert api(bob).get(f"{LIST}/b-1").status_code == 404

    @pytest.mark.parametrize("reference", ["%00", "a%00b", "%C2%B2", "x" * 65])
    def test_ids_no_row_can_hold_are_404(self, api: Api, staff: User, reference: str) -> None:
        assert api(staff).get(f"{LIST}/{reference}").status_code == 404

    @pytest.mark.parametrize("query", ["user_id=%00", "currency=a%00b", "tenant=%00", "tenant=%C2%B2"])
    def test_filters_no_database_can_compare_are_400(self, api: Api, staff: User, query: str) -> None:
        assert api(staff).get(f"{LIST}?{query}").status_code == 400

    def test_staff_name_the_tenant_when_two_used_one_id(
        self, api: Api, staff: User, tenant_b: Tenant, record: Record
    ) -> None:
        record(tenant_b, "a-1", score=0.2)

        assert api(staff).get(f"{LIST}/a-3").status_code == 200
        ambiguous = api(staff).get(f"{LIST}/a-1")
        assert ambiguous.status_code == 400 and "tenant" in ambiguous.json()["error"]["details"]
        assert api(staff).get(f"{LIST}/a-1?tenant=evil").json()["score"] == 0.2

    @pytest.mark.parametrize("method", ["put", "patch", "delete"])
    def test_the_ledger_cannot_be_changed(self, api: Api, alice: User, method: str) -> None:
        response = getattr(api(alice), method)(f"{LIST}/a-1", {"decision": "approve"}, format="json")

        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_a_post_to_a_detail_is_405(self, api: Api, alice: User) -> None:
        assert api(alice).post(f"{LIST}/a-1", {}, format="json").status_code == 405


@pytest.mark.usefixtures("ledger")
class TestAuth:
    def test_anonymous_is_401(self, api: Api) -> None:
        assert api().get(LIST).status_code == 401

    def test_api_keys_need_api_read(self, api: Api, tenant_a: Tenant) -> None:
        _, data_plane = account_services.api_key_create(tenant=tenant_a, name="dp")
        _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])

        assert api(api_key=data_plane).get(LIST).status_code == 403
        assert ids(api(api_key=reader).get(LIST)) == ["a-4", "a-3", "a-2", "a-1"]
        assert api(api_key=reader).get(f"{LIST}/b-1").status_code == 404


class TestPostIsTheHotPaths:
    """Django only documents `POST /transaction`: the hot path answers it before Django sees it."""

    @pytest.mark.parametrize("url", [LIST, "/transaction"])
    def test_a_post_that_reaches_django_is_a_503_json_error_and_writes_nothing(
        self, api: Api, alice: User, url: str
    ) -> None:
        body = {"transaction_id": "t", "amount": "1.00", "currency": "EUR", "user_id": "u"}
        response = api(alice).post(url, body, format="json")

        assert response.status_code == 503
        assert response.json()["error"]["code"] == "fraud_path_unavailable"
        assert not Transaction.objects.exists()

    def test_a_key_without_transactions_write_is_refused(self, api: Api, tenant_a: Tenant) -> None:
        _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])

        assert api(api_key=reader).post("/transaction", {}, format="json").status_code == 403


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 30, 12, 2, tzinfo=UTC),
        datetime(2026, 11, 30, 12, 2, 3, 450_001, tzinfo=UTC),
        datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_the_answers_created_at_is_the_text_the_api_renders(moment: datetime) -> None:
    assert created_at_text(moment) == serializers.DateTimeField().to_representation(moment)

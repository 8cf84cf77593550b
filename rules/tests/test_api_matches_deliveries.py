"""`/api/v1/matches` and `/api/v1/deliveries`: read-only, filtered, walled by tenant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, NotificationChannel, Rule, RuleMatch

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


@dataclass
class Recorded:
    rule: Rule
    event: Event
    match: RuleMatch
    channel: NotificationChannel
    delivery: Delivery


def record(tenant: Tenant, *, name: str = "big orders", status: str = DeliveryStatus.PENDING) -> Recorded:
    """A rule that matched an event and notified a channel, written directly."""
    rule = Rule.objects.create(tenant=tenant, name=name, dsl='when true then notify("webhook:orders")')
    event = Event.objects.create(tenant=tenant, type="order", payload={"type": "order"})
    match = RuleMatch.objects.create(tenant=tenant, rule=rule, event=event, group_key="ip=1.2.3.4")
    channel, _ = NotificationChannel.objects.get_or_create(
        tenant=tenant, kind="webhook", name="orders", defaults={"target": "https://hooks.example.com/o"}
    )
    delivery = Delivery.objects.create(
        tenant=tenant, match=match, channel=channel, message="hi", status=status, last_error="boom"
    )
    return Recorded(rule, event, match, channel, delivery)


class TestMatches:
    def test_matches_are_listed_with_their_rule(self, api: Api, bob: User, tenant_a: Tenant) -> None:
        given = record(tenant_a)

        response = api(bob).get("/api/v1/matches")

        assert response.status_code == 200
        [match] = response.json()["results"]
        assert match == {
            "id": given.match.pk,
            "rule": given.rule.pk,
            "rule_name": "big orders",
            "event": given.event.pk,
            "group_key": "ip=1.2.3.4",
            "matched_at": match["matched_at"],
            "suppressed": False,
            "problems": [],
        }
        assert api(bob).get(f"/api/v1/matches/{given.match.pk}").json() == match

    def test_filters_by_rule_and_suppression(self, api: Api, alice: User, tenant_a: Tenant) -> None:
        first = record(tenant_a)
        second = record(tenant_a, name="other")
        RuleMatch.objects.filter(pk=second.match.pk).update(suppressed=True)

        by_rule = api(alice).get(f"/api/v1/matches?rule={first.rule.pk}").json()
        suppressed = api(alice).get("/api/v1/matches?suppressed=true").json()

        assert [m["id"] for m in by_rule["results"]] == [first.match.pk]
        assert [m["id"] for m in suppressed["results"]] == [second.match.pk]

    @pytest.mark.parametrize("query", ["rule=abc", "rule=-1", "suppressed=perhaps"])
    def test_bad_filters_are_a_400(self, api: Api, alice: User, query: str) -> None:
        response = api(alice).get(f"/api/v1/matches?{query}")

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

    def test_matches_are_read_only(self, api: Api, alice: User, tenant_a: Tenant) -> None:
        given = record(tenant_a)
        url = f"/api/v1/matches/{given.match.pk}"

        assert api(alice).post("/api/v1/matches", {}, format="json").status_code == 405
        assert api(alice).patch(url, {"suppressed": True}, format="json").status_code == 405
        assert api(alice).delete(url).status_code == 405
        assert RuleMatch.objects.get().suppressed is False


class TestDeliveries:
    def test_deliveries_are_listed_with_their_channel(self, api: Api, bob: User, tenant_a: Tenant) -> None:
        given = record(tenant_a, status=DeliveryStatus.DEAD)

        response = api(bob).get("/api/v1/deliveries")

        [delivery] = response.json()["results"]
        assert set(delivery) == {
            "id",
            "match",
            "title",
            "source_ref",
            "channel",
            "channel_label",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "sent_at",
            "created_at",
        }
        assert (delivery["match"], delivery["channel"]) == (given.match.pk, given.channel.pk)
        assert (delivery["channel_label"], delivery["status"], delivery["last_error"]) == (
            "webhook:orders",
            "dead",
            "boom",
        )
        assert api(bob).get(f"/api/v1/deliveries/{given.delivery.pk}").json() == delivery

    def test_filter_by_status(self, api: Api, alice: User, tenant_a: Tenant) -> None:
        dead = record(tenant_a, status=DeliveryStatus.DEAD)
        record(tenant_a, name="other", status=DeliveryStatus.SENT)

        response = api(alice).get("/api/v1/deliveries?status=dead")

        assert [d["id"] for d in response.json()["results"]] == [dead.delivery.pk]

    def test_an_unknown_status_is_a_400(self, api: Api, alice: User) -> None:
        response = api(alice).get("/api/v1/deliveries?status=lost")

        assert response.status_code == 400
        assert "status" in response.json()["error"]["details"]

    def test_deliveries_are_read_only(self, api: Api, alice: User, tenant_a: Tenant) -> None:
        given = record(tenant_a, status=DeliveryStatus.DEAD)
        url = f"/api/v1/deliveries/{given.delivery.pk}"

        assert api(alice).patch(url, {"status": "sent"}, format="json").status_code == 405
        assert api(alice).delete(url).status_code == 405
        assert Delivery.objects.get().status == DeliveryStatus.DEAD

    def test_api_keys_need_api_read(self, api: Api, tenant_a: Tenant) -> None:
        record(tenant_a)
        _, sender = account_services.api_key_create(tenant=tenant_a, name="s", scopes=["events:write"])
        _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])

        assert api(api_key=sender).get("/api/v1/deliveries").status_code == 403
        assert api(api_key=reader).get("/api/v1/deliveries").json()["count"] == 1


@pytest.mark.parametrize("resource", ["matches", "deliveries"])
def test_mallory_sees_none_of_alices_matches_or_deliveries(
    api: Api, alice: User, mallory: User, tenant_a: Tenant, tenant_b: Tenant, resource: str
) -> None:
    alices = record(tenant_a)
    mallorys = record(tenant_b)
    alice_id, mallory_id = (
        (alices.match.pk, mallorys.match.pk) if resource == "matches" else (alices.delivery.pk, mallorys.delivery.pk)
    )

    listed = api(mallory).get(f"/api/v1/{resource}").json()

    assert [item["id"] for item in listed["results"]] == [mallory_id]
    assert api(mallory).get(f"/api/v1/{resource}/{alice_id}").status_code == 404
    assert api(mallory).patch(f"/api/v1/{resource}/{alice_id}", {}, format="json").status_code in (404, 405)
    assert api(mallory).delete(f"/api/v1/{resource}/{alice_id}").status_code in (404, 405)
    assert api(alice).get(f"/api/v1/{resource}/{mallory_id}").status_code == 404
    if resource == "matches":
        assert api(mallory).get(f"/api/v1/matches?rule={alices.rule.pk}").json()["count"] == 0
    assert RuleMatch.objects.count() == 2
    assert Delivery.objects.count() == 2


def test_an_ingested_event_shows_up_as_a_match_and_a_delivery(api: Api, alice: User) -> None:
    # given a rule and the channel it names, made through the API
    client = api(alice)
    client.post(
        "/api/v1/channels", {"kind": "webhook", "name": "orders", "target": "https://h.example/o"}, format="json"
    )
    dsl = 'when type == "order" and amount > 500 then notify("webhook:orders", "big: {amount}")'
    rule = client.post("/api/v1/rules", {"name": "big", "dsl": dsl}, format="json").json()
    ids = client.post("/events", [{"type": "order", "amount": 900}, {"type": "order", "amount": 5}], format="json")

    # when the worker's service evaluates them (tasks do not run in these tests)
    services.events_evaluate(event_ids=ids.json()["ids"])

    # then the big order matched once and its delivery waits to be sent
    [match] = client.get("/api/v1/matches").json()["results"]
    assert (match["rule"], match["event"], match["rule_name"]) == (rule["id"], ids.json()["ids"][0], "big")
    [delivery] = client.get("/api/v1/deliveries").json()["results"]
    assert (delivery["match"], delivery["channel_label"], delivery["status"]) == (
        match["id"],
        "webhook:orders",
        "pending",
    )
    assert client.get(f"/api/v1/events/{ids.json()['ids'][0]}").json()["evaluated_at"] is not None

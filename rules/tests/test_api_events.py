"""`POST /events` and `/api/v1/events`: ingest, input bounds checked before any write, the wall."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from core.conf import sentinel_settings
from rules.models import Event, EventSource
from tests.support.rows import row

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]

MAX_DEPTH = sentinel_settings.rules.EVENT_MAX_DEPTH
MAX_BYTES = sentinel_settings.rules.EVENT_MAX_BYTES


def post_raw(client: APIClient, body: str | bytes, path: str = "/api/v1/events", **extra: str) -> object:
    return client.post(path, data=body, content_type=extra.pop("content_type", "application/json"), **extra)


def nested(depth: int) -> dict[str, object]:
    """An event whose dict/list levels number exactly `depth` (the event itself is level 1)."""
    value: object = {"leaf": 1}
    for remaining in reversed(range(depth - 1)):  # lists and dicts alternate, the outermost a dict
        value = {"n": value} if remaining % 2 == 0 else [value]
    assert isinstance(value, dict)
    return value


def test_one_event_is_stored_and_answered_with_its_id(api: Api, alice: User, tenant_a: Tenant) -> None:
    response = api(alice).post("/api/v1/events", {"type": "order", "amount": 900}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["count"] == 1
    event = Event.objects.get(pk=body["ids"][0])
    assert (event.tenant, event.type, event.source) == (tenant_a, "order", EventSource.API)
    assert event.payload == {"type": "order", "amount": 900}
    assert event.evaluated_at is None


def test_a_list_is_stored_in_order(api: Api, bob: User) -> None:
    events = [{"type": "login", "n": 1}, {"n": 2}, {"type": "order", "n": 3}]

    response = api(bob).post("/api/v1/events", events, format="json")

    assert response.status_code == 202
    ids = response.json()["ids"]
    assert response.json()["count"] == 3
    stored = {event.pk: event for event in Event.objects.all()}
    assert [stored[pk].payload["n"] for pk in ids] == [1, 2, 3]
    assert [stored[pk].type for pk in ids] == ["login", "", "order"]


def test_the_top_level_alias_ingests_too(api: Api, alice: User, tenant_a: Tenant) -> None:
    response = api(alice).post("/events", [{"type": "a"}, {"type": "b"}], format="json")

    assert response.status_code == 202
    assert response.json()["count"] == 2
    assert set(Event.objects.filter(tenant=tenant_a).values_list("type", flat=True)) == {"a", "b"}


def test_a_thousand_events_is_the_limit_and_accepted(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/events", [{"i": i} for i in range(1000)], format="json")

    assert response.status_code == 202
    assert Event.objects.count() == 1000


def test_nesting_up_to_the_limit_is_accepted(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/events", nested(MAX_DEPTH), format="json")

    assert response.status_code == 202, response.content


BAD_BODIES = {
    "not json": "this is not json",
    "truncated json": '{"type": "order"',
    "empty list": "[]",
    "over 1000 events": json.dumps([{"i": i} for i in range(1001)]),
    "a number": "5",
    "a string": '"order"',
    "null": "null",
    "an element that is not an object": '[{"type": "a"}, 7]',
    "a list inside the list": '[[{"type": "a"}]]',
    "type not a string": '{"type": 5}',
    "type null": '{"type": null}',
    "type in the second event": '[{"type": "a"}, {"type": ["b"]}]',
    "too deep": json.dumps(nested(MAX_DEPTH + 1)),
    "too deep for python's json": "[" * 100_000 + "]" * 100_000,
    "too large an event": json.dumps({"type": "big", "blob": "x" * MAX_BYTES}),
    "NaN": '{"amount": NaN}',
    "a number beyond float range": '{"amount": 1e999}',
    "a NUL character": '{"note": "a\\u0000b"}',
    "a NUL character in a key": '{"a\\u0000b": 1}',
    "a lone surrogate": '{"note": "\\ud800"}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
@pytest.mark.parametrize("path", ["/api/v1/events", "/events"])
def test_bad_input_is_a_json_400_and_stores_nothing(api: Api, alice: User, body: str, path: str) -> None:
    response = post_raw(api(alice), body, path)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in ("validation_error", "parse_error")
    assert error["message"]
    assert not Event.objects.exists()


def test_a_bad_event_names_its_position(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/events", [{"type": "ok"}, {"type": "ok"}, {"type": 3}], format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"events": {"2": ["`type` must be a string."]}}
    assert not Event.objects.exists()  # not even the two good ones before it


def test_a_body_over_the_limit_is_a_json_413(api: Api, alice: User) -> None:
    body = json.dumps({"blob": "x" * settings.API_MAX_BODY_BYTES})

    for path in ("/api/v1/events", "/events"):
        response = post_raw(api(alice), body, path)

        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    assert not Event.objects.exists()


def test_a_body_that_is_not_declared_json_is_a_json_415(api: Api, alice: User) -> None:
    response = post_raw(api(alice), "type=order", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert not Event.objects.exists()


def test_anonymous_callers_are_refused(api: Api, db: None) -> None:
    response = api().post("/events", {"type": "x"}, format="json")

    assert response.status_code == 401
    assert "error" in response.json()
    assert not Event.objects.exists()


class TestApiKeys:
    def test_a_key_with_events_write_ingests_into_its_tenant(self, api: Api, tenant_a: Tenant) -> None:
        _, raw = account_services.api_key_create(tenant=tenant_a, name="sender", scopes=["events:write"])

        response = api(api_key=raw).post("/events", {"type": "order"}, format="json")

        assert response.status_code == 202
        assert Event.objects.get().tenant == tenant_a

    def test_a_key_without_events_write_is_refused(self, api: Api, tenant_a: Tenant) -> None:
        _, raw = account_services.api_key_create(tenant=tenant_a, name="reader", scopes=["api:read", "api:write"])

        response = api(api_key=raw).post("/api/v1/events", {"type": "order"}, format="json")

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
        assert not Event.objects.exists()

    def test_events_write_does_not_read_events_back(self, api: Api, tenant_a: Tenant) -> None:
        _, sender = account_services.api_key_create(tenant=tenant_a, name="sender", scopes=["events:write"])
        _, reader = account_services.api_key_create(tenant=tenant_a, name="reader", scopes=["api:read"])

        assert api(api_key=sender).get("/api/v1/events").status_code == 403
        assert api(api_key=reader).get("/api/v1/events").status_code == 200


class TestWhichTenant:
    def test_staff_without_a_tenant_must_name_one(self, api: Api, staff: User) -> None:
        response = api(staff).post("/api/v1/events", {"type": "x"}, format="json")

        assert response.status_code == 400
        assert "tenant" in response.json()["error"]["details"]
        assert not Event.objects.exists()

    @pytest.mark.parametrize("reference", ["wonderland", "id", "uuid"])
    def test_staff_name_the_tenant_by_slug_id_or_uuid(
        self, api: Api, staff: User, tenant_a: Tenant, reference: str
    ) -> None:
        value = {"wonderland": "wonderland", "id": str(tenant_a.pk), "uuid": str(tenant_a.uuid)}[reference]

        response = api(staff).post(f"/events?tenant={value}", {"type": "x"}, format="json")

        assert response.status_code == 202
        assert Event.objects.get().tenant == tenant_a

    def test_an_unknown_tenant_is_a_400(self, api: Api, staff: User) -> None:
        response = api(staff).post("/events?tenant=nowhere", {"type": "x"}, format="json")

        assert response.status_code == 400
        assert "tenant" in response.json()["error"]["details"]
        assert not Event.objects.exists()

    def test_members_cannot_send_into_another_tenant(self, api: Api, alice: User, tenant_b: Tenant) -> None:
        response = api(alice).post("/events?tenant=evil", {"type": "x"}, format="json")

        assert response.status_code == 403
        assert not Event.objects.exists()


class TestReading:
    def test_the_list_is_newest_first_and_filters_by_type(self, api: Api, alice: User) -> None:
        client = api(alice)
        first = client.post("/events", {"type": "order", "n": 1}, format="json").json()["ids"][0]
        client.post("/events", {"type": "login"}, format="json")
        last = client.post("/events", {"type": "order", "n": 3}, format="json").json()["ids"][0]

        everything = client.get("/api/v1/events").json()
        orders = client.get("/api/v1/events?type=order").json()

        assert everything["count"] == 3
        assert [event["id"] for event in orders["results"]] == [last, first]
        assert orders["results"][0]["payload"] == {"type": "order", "n": 3}

    def test_one_event_by_id(self, api: Api, bob: User) -> None:
        created = api(bob).post("/events", {"type": "order"}, format="json").json()["ids"][0]

        response = api(bob).get(f"/api/v1/events/{created}")

        assert response.status_code == 200
        assert set(response.json()) >= {"id", "type", "source", "payload", "received_at", "evaluated_at"}

    def test_events_cannot_be_changed_or_deleted(self, api: Api, alice: User) -> None:
        created = api(alice).post("/events", {"type": "order"}, format="json").json()["ids"][0]
        url = f"/api/v1/events/{created}"
        before = row(Event.objects.get(pk=created))

        assert api(alice).patch(url, {"type": "x"}, format="json").status_code == 405
        assert api(alice).delete(url).status_code == 405
        assert Event.objects.get(pk=created).type == "order"
        assert row(Event.objects.get(pk=created)) == before  # payload and evaluation state too
        assert Event.objects.count() == 1

    def test_the_alias_only_ingests(self, api: Api, alice: User) -> None:
        response = api(alice).get("/events")

        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_mallory_neither_lists_nor_reads_nor_changes_alices_events(api: Api, alice: User, mallory: User) -> None:
    created = api(alice).post("/events", {"type": "order"}, format="json").json()["ids"][0]
    api(mallory).post("/events", {"type": "mine"}, format="json")
    url = f"/api/v1/events/{created}"
    before = row(Event.objects.get(pk=created))

    listed = api(mallory).get("/api/v1/events").json()
    assert [event["type"] for event in listed["results"]] == ["mine"]
    assert api(mallory).get("/api/v1/events?type=order").json()["count"] == 0
    assert api(mallory).get(url).status_code == 404
    assert api(mallory).patch(url, {"type": "x"}, format="json").status_code in (404, 405)
    assert api(mallory).delete(url).status_code in (404, 405)
    assert Event.objects.get(pk=created).type == "order"
    assert row(Event.objects.get(pk=created)) == before
    assert Event.objects.count() == 2

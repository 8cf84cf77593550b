"""`/api/v1/channels`: targets checked, the secret write-only, names unique per kind, the wall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from rules.models import NotificationChannel
from tests.support.rows import row

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]

SECRET = "s3cr3t-signing-key-do-not-leak"


def create_channel(client: APIClient, **overrides: Any) -> dict[str, Any]:
    body = {"kind": "webhook", "name": "orders", "target": "https://hooks.example.com/orders", **overrides}
    response = client.post("/api/v1/channels", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_an_admin_creates_a_channel_and_the_secret_is_not_returned(api: Api, alice: User, tenant_a: Tenant) -> None:
    response = api(alice).post(
        "/api/v1/channels",
        {"kind": "webhook", "name": "orders", "target": "https://hooks.example.com/o", "secret": SECRET},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert "secret" not in body
    assert SECRET not in response.content.decode()
    assert body["has_secret"] is True
    assert (body["kind"], body["name"], body["active"], body["tenant"]) == ("webhook", "orders", True, tenant_a.pk)
    assert NotificationChannel.objects.get().secret == SECRET


def test_the_secret_never_appears_in_reads(api: Api, alice: User) -> None:
    created = create_channel(api(alice), secret=SECRET)

    listed = api(alice).get("/api/v1/channels")
    detail = api(alice).get(f"/api/v1/channels/{created['id']}")

    for response in (listed, detail):
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
        assert "secret" not in response.content.decode().replace("has_secret", "")
    assert detail.json()["has_secret"] is True


def test_updates_set_keep_or_clear_the_secret(api: Api, alice: User) -> None:
    created = create_channel(api(alice))
    url = f"/api/v1/channels/{created['id']}"
    assert created["has_secret"] is False

    set_ = api(alice).patch(url, {"secret": SECRET}, format="json")
    kept = api(alice).patch(url, {"target": "https://hooks.example.com/v2"}, format="json")

    for response in (set_, kept):
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
        assert response.json()["has_secret"] is True
    channel = NotificationChannel.objects.get()
    assert (channel.secret, channel.target) == (SECRET, "https://hooks.example.com/v2")

    cleared = api(alice).patch(url, {"secret": ""}, format="json")

    assert cleared.json()["has_secret"] is False
    assert NotificationChannel.objects.get().secret == ""


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        ("slack", "https://hooks.slack.com/services/T0/B0/x"),
        ("discord", "https://discord.com/api/webhooks/1/x"),
        ("email", "oncall@example.com"),
        ("webhook", "http://127.0.0.1:9000/hook"),
    ],
)
def test_every_kind_with_its_target(api: Api, alice: User, kind: str, target: str) -> None:
    created = create_channel(api(alice), kind=kind, name="#ops" if kind == "slack" else "ops", target=target)

    assert created["target"] == target


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"kind": "pager"}, 400),
        ({"target": "not a url"}, 400),
        ({"target": "ftp://files.example.com/x"}, 400),
        ({"kind": "email", "target": "https://example.com"}, 400),
        ({"kind": "webhook", "target": "oncall@example.com"}, 400),
        ({"name": ""}, 400),
        ({"secret": "x" * 201}, 400),
        ({"target": "https://x.example/\u0000"}, 400),
    ],
)
def test_invalid_channels_are_a_json_400(api: Api, alice: User, overrides: dict[str, Any], status: int) -> None:
    body = {"kind": "webhook", "name": "orders", "target": "https://hooks.example.com/orders", **overrides}

    response = api(alice).post("/api/v1/channels", body, format="json")

    assert response.status_code == status, response.content
    assert response.json()["error"]["details"]
    assert not NotificationChannel.objects.exists()


def test_an_invalid_target_on_update_changes_nothing(api: Api, alice: User) -> None:
    created = create_channel(api(alice))
    before = row(NotificationChannel.objects.get())

    response = api(alice).patch(
        f"/api/v1/channels/{created['id']}", {"target": "nope", "name": "renamed"}, format="json"
    )

    assert response.status_code == 400
    assert NotificationChannel.objects.get().target == "https://hooks.example.com/orders"
    assert row(NotificationChannel.objects.get()) == before  # the valid field of the request was not applied either


def test_a_channel_may_be_created_inactive(api: Api, alice: User) -> None:
    created = create_channel(api(alice), active=False)

    assert created["active"] is False
    assert NotificationChannel.objects.get().active is False


class TestConflicts:
    def test_a_taken_kind_and_name_is_a_409(self, api: Api, alice: User, mallory: User) -> None:
        taken = create_channel(api(alice))
        create_channel(api(alice), kind="slack", target="https://hooks.slack.com/x")  # another kind: fine
        create_channel(api(mallory))  # another tenant: fine
        before = row(NotificationChannel.objects.get(pk=taken["id"]))

        response = api(alice).post(
            "/api/v1/channels",
            {"kind": "webhook", "name": "orders", "target": "https://elsewhere.example.com"},
            format="json",
        )

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert NotificationChannel.objects.count() == 3
        assert row(NotificationChannel.objects.get(pk=taken["id"])) == before  # not overwritten either

    def test_renaming_onto_a_taken_name_is_a_409(self, api: Api, alice: User) -> None:
        create_channel(api(alice))
        other = create_channel(api(alice), name="other")
        before = row(NotificationChannel.objects.get(pk=other["id"]))

        response = api(alice).patch(f"/api/v1/channels/{other['id']}", {"name": "orders"}, format="json")

        assert response.status_code == 409
        assert NotificationChannel.objects.get(pk=other["id"]).name == "other"
        assert row(NotificationChannel.objects.get(pk=other["id"])) == before


class TestRoles:
    def test_members_read_channels_but_do_not_change_them(self, api: Api, alice: User, bob: User) -> None:
        created = create_channel(api(alice), secret=SECRET)
        url = f"/api/v1/channels/{created['id']}"
        before = row(NotificationChannel.objects.get())

        listed = api(bob).get("/api/v1/channels")
        assert listed.status_code == 200
        assert SECRET not in listed.content.decode()
        assert api(bob).post("/api/v1/channels", {"kind": "webhook", "name": "b"}, format="json").status_code == 403
        assert api(bob).patch(url, {"active": False}, format="json").status_code == 403
        assert api(bob).delete(url).status_code == 403
        assert NotificationChannel.objects.get().active is True
        assert row(NotificationChannel.objects.get()) == before

    def test_api_keys_need_api_write(self, api: Api, tenant_a: Tenant) -> None:
        _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])
        _, writer = account_services.api_key_create(tenant=tenant_a, name="w", scopes=["api:write"])
        body = {"kind": "webhook", "name": "k", "target": "https://hooks.example.com/k", "secret": SECRET}

        assert api(api_key=reader).post("/api/v1/channels", body, format="json").status_code == 403
        assert not NotificationChannel.objects.exists()
        created = api(api_key=writer).post("/api/v1/channels", body, format="json")
        assert created.status_code == 201
        assert SECRET not in created.content.decode()
        assert SECRET not in api(api_key=reader).get("/api/v1/channels").content.decode()

    def test_admins_delete(self, api: Api, alice: User) -> None:
        created = create_channel(api(alice))

        assert api(alice).delete(f"/api/v1/channels/{created['id']}").status_code == 204
        assert not NotificationChannel.objects.exists()


def test_mallory_neither_sees_nor_changes_alices_channels(api: Api, alice: User, mallory: User) -> None:
    created = create_channel(api(alice), secret=SECRET)
    create_channel(api(mallory), name="mallory's")
    url = f"/api/v1/channels/{created['id']}"
    before = row(NotificationChannel.objects.get(pk=created["id"]))

    listed = api(mallory).get("/api/v1/channels").json()
    assert [channel["name"] for channel in listed["results"]] == ["mallory's"]
    assert api(mallory).get(url).status_code == 404
    assert api(mallory).patch(url, {"target": "https://evil.example.com"}, format="json").status_code == 404
    assert api(mallory).delete(url).status_code == 404
    channel = NotificationChannel.objects.get(pk=created["id"])
    assert (channel.target, channel.secret) == ("https://hooks.example.com/orders", SECRET)
    assert row(channel) == before

"""API keys: created by tenant admins, shown once, stored hashed, usable, revocable, walled by tenant."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts import services
from accounts.models import ApiKey, Scope, Tenant, User
from tests.support.rows import row

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


def create_key(client: APIClient, **body: object) -> dict:
    response = client.post("/api/v1/api-keys", {"name": "ci", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_an_admin_creates_a_key_and_sees_the_secret_once(api: Api, alice: User) -> None:
    created = create_key(api(alice), scopes=["proxy", "api:read"])

    assert created["key"].startswith(created["prefix"] + "_")
    assert created["scopes"] == ["proxy", "api:read"]
    assert created["status"] == "active"
    listed = api(alice).get("/api/v1/api-keys").json()["results"]
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert "key" not in listed[0]
    assert "key" not in api(alice).get(f"/api/v1/api-keys/{created['id']}").json()


def test_the_secret_is_never_stored_in_clear(api: Api, alice: User) -> None:
    created = create_key(api(alice))
    secret = created["key"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        rows = cursor.fetchall()
    assert rows
    flattened = " ".join(str(value) for row in rows for value in row)
    assert secret not in flattened
    assert secret.split("_", 2)[2] not in flattened


def test_a_key_authenticates_as_its_tenant(api: Api, alice: User) -> None:
    created = create_key(api(alice), scopes=["api:read"])

    me = api(api_key=created["key"]).get("/auth/me")

    assert me.status_code == 200
    assert me.json()["tenant"]["slug"] == "wonderland"
    assert me.json()["api_key"]["prefix"] == created["prefix"]
    assert ApiKey.objects.get(pk=created["id"]).last_used_at is not None


@pytest.mark.parametrize("raw", ["snl_deadbeef_wrong", "garbage", "snl_" + "x" * 500])
def test_an_unknown_key_is_a_json_401(api: Api, raw: str) -> None:
    response = api(api_key=raw).get("/auth/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working(api: Api, alice: User) -> None:
    created = create_key(api(alice))
    assert api(api_key=created["key"]).get("/auth/me").status_code == 200

    revoked = api(alice).post(f"/api/v1/api-keys/{created['id']}/revoke")

    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert api(api_key=created["key"]).get("/auth/me").status_code == 401


def test_delete_revokes_and_keeps_the_row_for_the_audit_trail(api: Api, alice: User) -> None:
    created = create_key(api(alice))

    assert api(alice).delete(f"/api/v1/api-keys/{created['id']}").status_code == 204

    assert ApiKey.objects.get(pk=created["id"]).revoked is True


def test_keys_of_a_deactivated_tenant_stop_working(api: Api, alice: User, tenant_a: Tenant) -> None:
    created = create_key(api(alice))
    tenant_a.active = False
    tenant_a.save()

    assert api(api_key=created["key"]).get("/auth/me").status_code == 401


def test_unknown_scopes_are_a_400(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/api-keys", {"name": "x", "scopes": ["root"]}, format="json")

    assert response.status_code == 400
    assert "scopes" in response.json()["error"]["details"]
    assert not ApiKey.objects.exists()


def test_a_member_cannot_manage_keys(api: Api, bob: User) -> None:
    assert api(bob).get("/api/v1/api-keys").status_code == 403
    assert api(bob).post("/api/v1/api-keys", {"name": "x"}, format="json").status_code == 403
    assert not ApiKey.objects.exists()


def test_a_key_cannot_manage_keys_even_with_write_scope(api: Api, alice: User, tenant_a: Tenant) -> None:
    key, raw = services.api_key_create(tenant=tenant_a, name="w", scopes=[Scope.API_READ, Scope.API_WRITE])
    before = row(key)
    every_scope = [scope.value for scope in Scope]

    assert api(api_key=raw).get("/api/v1/api-keys").status_code == 403
    assert api(api_key=raw).post("/api/v1/api-keys", {"name": "escalate"}, format="json").status_code == 403
    # The escalation itself: a key minting a key with every scope, or widening its own scopes.
    minted = api(api_key=raw).post("/api/v1/api-keys", {"name": "all", "scopes": every_scope}, format="json")
    widened = api(api_key=raw).patch(f"/api/v1/api-keys/{key.pk}", {"scopes": every_scope}, format="json")
    assert (minted.status_code, widened.status_code) == (403, 403)
    # Nothing changed: no second key, and the key's own row (scopes included) as it was, but for
    # the last-use stamp that every authenticated call writes.
    assert list(ApiKey.objects.values_list("pk", flat=True)) == [key.pk]
    assert row(key) | {"last_used_at": None} == before
    assert ApiKey.objects.get(pk=key.pk).scopes == [Scope.API_READ, Scope.API_WRITE]


class TestTenantWall:
    """Mallory administers another tenant: she can neither see nor touch Alice's keys."""

    def test_mallory_does_not_list_alices_keys(self, api: Api, alice: User, mallory: User) -> None:
        create_key(api(alice))
        mine = create_key(api(mallory))

        listed = api(mallory).get("/api/v1/api-keys").json()["results"]

        assert [k["id"] for k in listed] == [mine["id"]]

    def test_mallory_cannot_read_alices_key(self, api: Api, alice: User, mallory: User) -> None:
        created = create_key(api(alice))

        response = api(mallory).get(f"/api/v1/api-keys/{created['id']}")

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    def test_mallory_cannot_revoke_alices_key(self, api: Api, alice: User, mallory: User) -> None:
        created = create_key(api(alice))

        before = row(ApiKey.objects.get(pk=created["id"]))

        assert api(mallory).post(f"/api/v1/api-keys/{created['id']}/revoke").status_code == 404
        assert api(mallory).delete(f"/api/v1/api-keys/{created['id']}").status_code == 404
        assert ApiKey.objects.get(pk=created["id"]).revoked is False
        assert row(ApiKey.objects.get(pk=created["id"])) == before
        assert api(api_key=created["key"]).get("/auth/me").status_code == 200  # and it still works

    def test_mallory_cannot_create_a_key_in_alices_tenant(self, api: Api, alice: User, mallory: User) -> None:
        response = api(mallory).post("/api/v1/api-keys", {"name": "x", "tenant": "wonderland"}, format="json")

        assert response.status_code == 403
        assert not ApiKey.objects.filter(tenant__slug="wonderland").exists()
        assert not ApiKey.objects.exists()  # nor one in her own tenant instead

    def test_staff_see_every_key_and_create_in_a_named_tenant(
        self, api: Api, alice: User, mallory: User, staff: User
    ) -> None:
        create_key(api(alice))
        create_key(api(mallory))

        assert api(staff).get("/api/v1/api-keys").json()["count"] == 2
        created = create_key(api(staff), tenant="evil")
        assert ApiKey.objects.get(pk=created["id"]).tenant.slug == "evil"
        assert api(staff).post("/api/v1/api-keys", {"name": "x"}, format="json").status_code == 400
        assert ApiKey.objects.count() == 3

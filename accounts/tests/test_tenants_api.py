"""`/api/v1/tenants` and its members: staff manage tenants, tenant admins manage members."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, User
from tests.support.cast import make_member

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


def test_staff_create_a_tenant_with_overrides(api: Api, staff: User) -> None:
    body = {"name": "Umbrella", "tier": "vital", "base_rate_limit": 500, "window_ms": 1000}

    response = api(staff).post("/api/v1/tenants", body, format="json")

    assert response.status_code == 201, response.content
    created = response.json()
    assert created["slug"] == "umbrella"
    assert created["uuid"]
    assert Tenant.objects.get(slug="umbrella").rate_limit_overrides() == {"BASE_RATE_LIMIT": 500, "WINDOW_MS": 1000}


@pytest.mark.parametrize(
    "body",
    [{"name": "x", "tier": "platinum"}, {"name": "x", "base_rate_limit": 0}, {"name": "x", "slug": "not a slug"}, {}],
)
def test_invalid_tenants_are_a_400(api: Api, staff: User, body: dict) -> None:
    response = api(staff).post("/api/v1/tenants", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_a_duplicate_slug_is_a_409(api: Api, staff: User, tenant_a: Tenant) -> None:
    response = api(staff).post("/api/v1/tenants", {"name": "Again", "slug": "wonderland"}, format="json")

    assert response.status_code == 409


def test_members_see_only_their_tenant_and_cannot_change_it(api: Api, alice: User, tenant_b: Tenant) -> None:
    listed = api(alice).get("/api/v1/tenants").json()["results"]

    assert [t["slug"] for t in listed] == ["wonderland"]
    assert api(alice).get(f"/api/v1/tenants/{tenant_b.pk}").status_code == 404
    own = listed[0]["id"]
    assert api(alice).patch(f"/api/v1/tenants/{own}", {"tier": "vital"}, format="json").status_code == 403
    assert api(alice).post("/api/v1/tenants", {"name": "Mine"}, format="json").status_code == 403
    assert api(alice).delete(f"/api/v1/tenants/{own}").status_code == 403


def test_an_admin_adds_and_removes_members(api: Api, alice: User, tenant_a: Tenant) -> None:
    User.objects.create_user(username="dave", password="x" * 12)
    url = f"/api/v1/tenants/{tenant_a.pk}/members"

    added = api(alice).post(url, {"username": "dave", "role": "member"}, format="json")
    assert added.status_code == 201
    assert {m["username"] for m in api(alice).get(url).json()["results"]} == {"alice", "dave"}

    promoted = api(alice).patch(f"{url}/dave", {"role": "admin"}, format="json")
    assert promoted.json()["role"] == "admin"
    assert api(alice).delete(f"{url}/dave").status_code == 204
    assert not Membership.objects.filter(user__username="dave").exists()


def test_the_last_admin_cannot_be_removed_or_demoted(api: Api, alice: User, tenant_a: Tenant) -> None:
    url = f"/api/v1/tenants/{tenant_a.pk}/members/alice"

    assert api(alice).delete(url).status_code == 409
    assert api(alice).patch(url, {"role": "member"}, format="json").status_code == 409
    assert Membership.objects.get(user=alice).role == Role.ADMIN


def test_a_user_in_another_tenant_cannot_be_added(api: Api, alice: User, mallory: User, tenant_a: Tenant) -> None:
    response = api(alice).post(f"/api/v1/tenants/{tenant_a.pk}/members", {"username": "mallory"}, format="json")

    assert response.status_code == 409


def test_a_member_cannot_manage_members(api: Api, bob: User, tenant_a: Tenant) -> None:
    User.objects.create_user(username="eve", password="x" * 12)
    url = f"/api/v1/tenants/{tenant_a.pk}/members"

    assert api(bob).get(url).status_code == 200
    assert api(bob).post(url, {"username": "eve"}, format="json").status_code == 403


def test_mallory_cannot_touch_alices_members(api: Api, alice: User, mallory: User, tenant_a: Tenant) -> None:
    make_member("frank", tenant_a, Role.MEMBER)
    url = f"/api/v1/tenants/{tenant_a.pk}/members"

    assert api(mallory).get(url).status_code == 404
    assert api(mallory).delete(f"{url}/frank").status_code == 404
    assert api(mallory).post(url, {"username": "mallory", "role": "admin"}, format="json").status_code == 404
    assert Membership.objects.filter(tenant=tenant_a).count() == 2


def test_api_keys_cannot_use_the_tenants_api(api: Api, alice: User, tenant_a: Tenant) -> None:
    from accounts import services

    _, raw = services.api_key_create(tenant=tenant_a, name="k", scopes=["api:read", "api:write"])

    assert api(api_key=raw).get("/api/v1/tenants").status_code == 403

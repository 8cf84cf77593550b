"""`/api/v1/tenants` and its members: staff manage tenants, tenant admins manage members."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, User
from tests.support.cast import make_member
from tests.support.rows import row

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
    assert not Tenant.objects.exists()


def test_a_duplicate_slug_is_a_409(api: Api, staff: User, tenant_a: Tenant) -> None:
    before = row(tenant_a)

    response = api(staff).post("/api/v1/tenants", {"name": "Again", "slug": "wonderland"}, format="json")

    assert response.status_code == 409
    assert list(Tenant.objects.all()) == [tenant_a]
    assert row(tenant_a) == before  # still "Wonderland", not renamed "Again"


def test_members_see_only_their_tenant_and_cannot_change_it(api: Api, alice: User, tenant_b: Tenant) -> None:
    own_before, other_before = row(alice.membership.tenant), row(tenant_b)
    listed = api(alice).get("/api/v1/tenants").json()["results"]

    assert [t["slug"] for t in listed] == ["wonderland"]
    assert api(alice).get(f"/api/v1/tenants/{tenant_b.pk}").status_code == 404
    own = listed[0]["id"]
    assert api(alice).patch(f"/api/v1/tenants/{own}", {"tier": "vital"}, format="json").status_code == 403
    assert api(alice).post("/api/v1/tenants", {"name": "Mine"}, format="json").status_code == 403
    assert api(alice).delete(f"/api/v1/tenants/{own}").status_code == 403
    assert api(alice).patch(f"/api/v1/tenants/{tenant_b.pk}", {"active": False}, format="json").status_code == 403
    # Neither tenant changed (tier, activity, the rest), and no third one appeared.
    assert (row(alice.membership.tenant), row(tenant_b)) == (own_before, other_before)
    assert Tenant.objects.count() == 2


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
    before = row(alice.membership)

    assert api(alice).delete(url).status_code == 409
    assert api(alice).patch(url, {"role": "member"}, format="json").status_code == 409
    assert Membership.objects.get(user=alice).role == Role.ADMIN
    assert row(alice.membership) == before


def test_a_user_in_another_tenant_cannot_be_added(api: Api, alice: User, mallory: User, tenant_a: Tenant) -> None:
    before = row(mallory.membership)

    response = api(alice).post(f"/api/v1/tenants/{tenant_a.pk}/members", {"username": "mallory"}, format="json")

    assert response.status_code == 409
    assert row(mallory.membership) == before  # still in her own tenant, with her role
    assert not Membership.objects.filter(tenant=tenant_a, user=mallory).exists()


def test_a_member_cannot_manage_members(api: Api, bob: User, tenant_a: Tenant) -> None:
    User.objects.create_user(username="eve", password="x" * 12)
    url = f"/api/v1/tenants/{tenant_a.pk}/members"
    bob_before = row(bob.membership)

    assert api(bob).get(url).status_code == 200
    assert api(bob).post(url, {"username": "eve"}, format="json").status_code == 403
    assert api(bob).patch(f"{url}/bob", {"role": "admin"}, format="json").status_code == 403  # nor promote himself
    assert not Membership.objects.filter(user__username="eve").exists()
    assert row(bob.membership) == bob_before


def test_mallory_cannot_touch_alices_members(api: Api, alice: User, mallory: User, tenant_a: Tenant) -> None:
    frank = make_member("frank", tenant_a, Role.MEMBER)
    url = f"/api/v1/tenants/{tenant_a.pk}/members"
    before = row(frank.membership)

    assert api(mallory).get(url).status_code == 404
    assert api(mallory).delete(f"{url}/frank").status_code == 404
    assert api(mallory).post(url, {"username": "mallory", "role": "admin"}, format="json").status_code == 404
    assert api(mallory).patch(f"{url}/frank", {"role": "admin"}, format="json").status_code == 404
    assert Membership.objects.filter(tenant=tenant_a).count() == 2
    assert row(frank.membership) == before
    assert not Membership.objects.filter(tenant=tenant_a, user=mallory).exists()


def test_api_keys_cannot_use_the_tenants_api(api: Api, alice: User, tenant_a: Tenant) -> None:
    from accounts import services

    _, raw = services.api_key_create(tenant=tenant_a, name="k", scopes=["api:read", "api:write"])
    before = row(tenant_a)

    assert api(api_key=raw).get("/api/v1/tenants").status_code == 403
    assert api(api_key=raw).patch(f"/api/v1/tenants/{tenant_a.pk}", {"tier": "vital"}, format="json").status_code == 403
    members = f"/api/v1/tenants/{tenant_a.pk}/members"
    assert api(api_key=raw).post(members, {"username": "alice"}, format="json").status_code == 403
    assert row(tenant_a) == before

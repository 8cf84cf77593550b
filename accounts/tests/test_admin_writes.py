"""Every door of the accounts admin writes through the services: the last admin is kept whichever
page tries to demote, move or remove them, and deactivating a user is the service's full stop.

Forms are posted as the admin renders them (every field, inline management forms included), the
way a browser would, not as hand-made dictionaries.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, User
from accounts.tests.htmlforms import FormData, field_named, form_data
from tests.support.cast import PASSWORD

pytestmark = pytest.mark.django_db


def rendered_form(client: Client, url: str, form_id: str) -> FormData:
    response = client.get(url)
    assert response.status_code == 200, url
    return form_data(response.content.decode(), form_id)


def page_text(response: HttpResponse) -> str:
    messages = " ".join(str(message) for message in get_messages(response.wsgi_request))
    return response.content.decode() + " " + messages


# --- the last admin, through each door ------------------------------------------------------------


def tenant_inline_demote(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_tenant_change", args=[alice.membership.tenant_id])
    data = rendered_form(client, url, "tenant_form")
    row = field_named(data, "-user", str(alice.pk)).removesuffix("-user")
    data[f"{row}-role"] = [Role.MEMBER]
    return client.post(url, data, follow=True)


def tenant_inline_remove(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_tenant_change", args=[alice.membership.tenant_id])
    data = rendered_form(client, url, "tenant_form")
    row = field_named(data, "-user", str(alice.pk)).removesuffix("-user")
    data[f"{row}-DELETE"] = ["on"]
    return client.post(url, data, follow=True)


def user_inline_demote(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_user_change", args=[alice.pk])
    data = rendered_form(client, url, "user_form")
    data["membership-0-role"] = [Role.MEMBER]
    return client.post(url, data, follow=True)


def user_inline_move(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_user_change", args=[alice.pk])
    data = rendered_form(client, url, "user_form")
    data["membership-0-tenant"] = [str(other.pk)]
    return client.post(url, data, follow=True)


def user_inline_remove(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_user_change", args=[alice.pk])
    data = rendered_form(client, url, "user_form")
    data["membership-0-DELETE"] = ["on"]
    return client.post(url, data, follow=True)


def membership_form_demote(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_membership_change", args=[alice.membership.pk])
    data = rendered_form(client, url, "membership_form")
    data["role"] = [Role.MEMBER]
    return client.post(url, data, follow=True)


def membership_form_move(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_membership_change", args=[alice.membership.pk])
    data = rendered_form(client, url, "membership_form")
    data["tenant"] = [str(other.pk)]
    return client.post(url, data, follow=True)


def membership_delete_page(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_membership_delete", args=[alice.membership.pk])
    return client.post(url, {"post": "yes"}, follow=True)


def membership_delete_selected(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_membership_changelist")
    chosen = [str(m.pk) for m in Membership.objects.all()]
    return client.post(url, {"action": "delete_selected", "_selected_action": chosen, "post": "yes"}, follow=True)


def user_delete_page(client: Client, alice: User, other: Tenant) -> HttpResponse:
    return client.post(reverse("admin:accounts_user_delete", args=[alice.pk]), {"post": "yes"}, follow=True)


def user_delete_selected(client: Client, alice: User, other: Tenant) -> HttpResponse:
    url = reverse("admin:accounts_user_changelist")
    chosen = [str(alice.pk), str(User.objects.get(username="bob").pk)]
    return client.post(url, {"action": "delete_selected", "_selected_action": chosen, "post": "yes"}, follow=True)


DOORS: list[Callable[[Client, User, Tenant], HttpResponse]] = [
    tenant_inline_demote,
    tenant_inline_remove,
    user_inline_demote,
    user_inline_move,
    user_inline_remove,
    membership_form_demote,
    membership_form_move,
    membership_delete_page,
    membership_delete_selected,
    user_delete_page,
    user_delete_selected,
]


@pytest.mark.parametrize("door", DOORS, ids=[door.__name__ for door in DOORS])
def test_the_last_admin_is_kept_whichever_admin_page_tries(
    door: Callable[[Client, User, Tenant], HttpResponse], staff_client: Client, alice: User, bob: User, tenant_b: Tenant
) -> None:
    # Given alice, the only admin of wonderland (bob is a member)
    before = sorted(Membership.objects.values_list("user__username", "tenant__slug", "role"))

    # When staff demote, move or remove her through one of the admin's pages
    response = door(staff_client, alice, tenant_b)

    # Then the page says why, and nothing changed (bob was not deleted alongside, either)
    assert response.status_code == 200
    assert "A tenant keeps at least one admin" in page_text(response)
    assert sorted(Membership.objects.values_list("user__username", "tenant__slug", "role")) == before
    assert User.objects.filter(username__in=["alice", "bob"]).count() == 2


def test_an_admin_swap_in_one_save_is_allowed(staff_client: Client, alice: User, bob: User) -> None:
    url = reverse("admin:accounts_tenant_change", args=[alice.membership.tenant_id])
    data = rendered_form(staff_client, url, "tenant_form")
    data[field_named(data, "-user", str(alice.pk)).removesuffix("-user") + "-role"] = [Role.MEMBER]
    data[field_named(data, "-user", str(bob.pk)).removesuffix("-user") + "-role"] = [Role.ADMIN]

    response = staff_client.post(url, data)

    assert response.status_code == 302
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles == {"alice": Role.MEMBER, "bob": Role.ADMIN}


# --- deactivating a user -----------------------------------------------------------------------------


def deactivate_by_action(client: Client, user: User) -> None:
    url = reverse("admin:accounts_user_changelist")
    response = client.post(url, {"action": "deactivate_users", "_selected_action": [user.pk]})
    assert response.status_code == 302


def deactivate_by_change_form(client: Client, user: User) -> None:
    url = reverse("admin:accounts_user_change", args=[user.pk])
    data = rendered_form(client, url, "user_form")
    data.pop("is_active")  # the checkbox, unticked
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]


@pytest.mark.parametrize("deactivate", [deactivate_by_action, deactivate_by_change_form])
def test_a_user_deactivated_in_the_admin_loses_sessions_and_refresh_tokens_for_good(
    deactivate: Callable[[Client, User], None], staff_client: Client, bob: User
) -> None:
    # Given bob, signed in to the admin (staff) and holding a refresh token
    User.objects.filter(pk=bob.pk).update(is_staff=True)
    browser = Client()
    assert browser.login(username="bob", password=PASSWORD)
    assert browser.get("/admin/").status_code == 200
    tokens = APIClient().post("/auth/token", {"username": "bob", "password": PASSWORD}, format="json").json()
    refresh = tokens["refresh"]

    # When staff deactivate him in the admin, and later let him back in (ticking "active")
    deactivate(staff_client, bob)
    bob.refresh_from_db()
    assert bob.is_active is False
    url = reverse("admin:accounts_user_change", args=[bob.pk])
    data = rendered_form(staff_client, url, "user_form")
    data["is_active"] = ["on"]
    assert staff_client.post(url, data).status_code == 302
    bob.refresh_from_db()
    assert bob.is_active is True

    # Then what he held before was ended, not merely suspended: the session is gone and the
    # refresh token stays refused (a stolen one does not come back to life with the account)
    assert browser.get("/admin/").status_code == 302
    assert not [s for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(bob.pk)]
    again = APIClient().post("/auth/token/refresh", {"refresh": refresh}, format="json")
    assert again.status_code == 401
    # His password still works: deactivation is not deletion.
    assert APIClient().post("/auth/token", {"username": "bob", "password": PASSWORD}, format="json").status_code == 200


def test_staff_cannot_deactivate_themselves_in_the_change_form(staff_client: Client, staff: User) -> None:
    url = reverse("admin:accounts_user_change", args=[staff.pk])
    data = rendered_form(staff_client, url, "user_form")
    data.pop("is_active")

    response = staff_client.post(url, data)

    assert response.status_code == 200
    assert "You cannot deactivate yourself." in response.content.decode()
    staff.refresh_from_db()
    assert staff.is_active is True


# --- the other accounts writes -------------------------------------------------------------------------


def test_a_tenant_made_in_the_admin_is_made_by_the_service(staff_client: Client) -> None:
    url = reverse("admin:accounts_tenant_add")
    data = rendered_form(staff_client, url, "tenant_form")
    data.update({"name": ["Acme"], "slug": ["acme"], "tier": ["economy"], "base_rate_limit": ["9"]})

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:3000]
    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.tier, tenant.base_rate_limit) == ("economy", 9)


def test_a_user_added_in_the_admin_gets_a_bcrypt_hash(staff_client: Client) -> None:
    url = reverse("admin:accounts_user_add")
    data = rendered_form(staff_client, url, "user_form")
    data.update({"username": ["carol"], "password1": [PASSWORD], "password2": [PASSWORD]})

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:3000]
    carol = User.objects.get(username="carol")
    assert carol.password.startswith("bcrypt_sha256$")
    assert carol.check_password(PASSWORD)

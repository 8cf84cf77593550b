"""The admin as a product: every page renders for staff, actions and key creation work."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, Tenant, User, hash_api_key

pytestmark = pytest.mark.django_db


def test_every_model_has_an_admin_whose_pages_render(staff_client: Client, alice: User, tenant_b: Tenant) -> None:
    for model, model_admin in admin.site._registry.items():
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        changelist = staff_client.get(reverse(f"admin:{info}_changelist"), {"q": "a"})
        assert changelist.status_code == 200, info
        if model_admin.has_add_permission(changelist.wsgi_request):
            assert staff_client.get(reverse(f"admin:{info}_add")).status_code == 200, info


def test_the_admin_is_for_staff_only(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    response = client.get("/admin/accounts/tenant/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_creating_a_key_in_the_admin_shows_the_secret_once(staff_client: Client, tenant_b: Tenant) -> None:
    response = staff_client.post(
        reverse("admin:accounts_apikey_add"),
        {"tenant": tenant_b.pk, "name": "from-admin", "scopes": ["proxy", "api:read"], "expires_at": ""},
        follow=True,
    )

    assert response.status_code == 200
    secret = re.search(r"(snl_[0-9a-f]{8}_[A-Za-z0-9_-]+)", response.content.decode()).group(1)
    key = ApiKey.objects.get(name="from-admin")
    assert key.key_hash == hash_api_key(secret)
    assert key.scopes == ["proxy", "api:read"]
    assert secret not in staff_client.get(reverse("admin:accounts_apikey_change", args=[key.pk])).content.decode()


def test_the_revoke_action_revokes(staff_client: Client, tenant_b: Tenant) -> None:
    from accounts.services import api_key_create

    key, _ = api_key_create(tenant=tenant_b, name="k")

    staff_client.post(
        reverse("admin:accounts_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )

    key.refresh_from_db()
    assert key.revoked is True


def test_tenant_tier_actions(staff_client: Client, tenant_b: Tenant) -> None:
    staff_client.post(
        reverse("admin:accounts_tenant_changelist"),
        {"action": "make_vital", "_selected_action": [tenant_b.pk]},
        follow=True,
    )

    tenant_b.refresh_from_db()
    assert tenant_b.tier == "vital"

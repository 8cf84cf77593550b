"""Whichever door changes what the proxies hold in memory (tenants, keys, routes), the config
version moves once the change commits, which is how every running proxy learns of it (SPEC 2.2).

The end-to-end tests in test_config_reaches_proxy_e2e.py show it with a running process for the
main doors; here every door is walked in-process, cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.api.serializers import TokenSerializer
from accounts.models import ApiKey, Tenant, User
from accounts.services import api_key_create
from accounts.tests.htmlforms import form_data
from core.config_version import CONFIG_VERSION_KEY
from gateway import services as gateway_services
from gateway.models import Route

pytestmark = pytest.mark.django_db

Door = Callable[[Client, APIClient, Tenant, ApiKey, Route], Any]


def post_form(client: Client, url: str, form_id: str, **changes: list[str]) -> None:
    data = form_data(client.get(url).content.decode(), form_id)
    data.update(changes)
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]


def changelist_action(client: Client, model: str, action: str, pk: int, **extra: str) -> None:
    url = reverse(f"admin:{model}_changelist")
    response = client.post(url, {"action": action, "_selected_action": [pk], **extra})
    assert response.status_code == 302, response.content.decode()[:3000]


DOORS: dict[str, Door] = {
    "admin tenant form": lambda c, a, t, k, r: post_form(
        c, reverse("admin:accounts_tenant_change", args=[t.pk]), "tenant_form", base_rate_limit=["7"]
    ),
    "admin tenant add": lambda c, a, t, k, r: post_form(
        c, reverse("admin:accounts_tenant_add"), "tenant_form", name=["New"], slug=["new"]
    ),
    "admin tenant delete page": lambda c, a, t, k, r: c.post(
        reverse("admin:accounts_tenant_delete", args=[t.pk]), {"post": "yes"}
    ),
    "admin tenant delete selected": lambda c, a, t, k, r: changelist_action(
        c, "accounts_tenant", "delete_selected", t.pk, post="yes"
    ),
    "admin tenant tier action": lambda c, a, t, k, r: changelist_action(c, "accounts_tenant", "make_vital", t.pk),
    "API tenant update": lambda c, a, t, k, r: a.patch(f"/api/v1/tenants/{t.pk}", {"tier": "vital"}, format="json"),
    "API tenant delete": lambda c, a, t, k, r: a.delete(f"/api/v1/tenants/{t.pk}"),
    "admin key form": lambda c, a, t, k, r: post_form(
        c, reverse("admin:accounts_apikey_change", args=[k.pk]), "apikey_form", name=["renamed"]
    ),
    "admin key revoke action": lambda c, a, t, k, r: changelist_action(c, "accounts_apikey", "revoke", k.pk),
    "admin key delete selected": lambda c, a, t, k, r: changelist_action(
        c, "accounts_apikey", "delete_selected", k.pk, post="yes"
    ),
    "API key revoke": lambda c, a, t, k, r: a.post(f"/api/v1/api-keys/{k.pk}/revoke"),
    "API key delete": lambda c, a, t, k, r: a.delete(f"/api/v1/api-keys/{k.pk}"),
    "admin route form": lambda c, a, t, k, r: post_form(
        c, reverse("admin:gateway_route_change", args=[r.pk]), "route_form", base_rate_limit=["5"]
    ),
    "admin route delete selected": lambda c, a, t, k, r: changelist_action(
        c, "gateway_route", "delete_selected", r.pk, post="yes"
    ),
}


@pytest.mark.parametrize("door", list(DOORS))
def test_the_config_version_moves_after_the_commit_whichever_door(
    door: str, staff: User, tenant_a: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    key, _ = api_key_create(tenant=tenant_a, name="k")
    route = gateway_services.route_create(
        tenant=None, name="r", path_prefix="/r/", targets=["http://127.0.0.1:9"], auth_mode="none"
    )
    browser = Client()
    browser.force_login(staff)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {TokenSerializer.get_token(staff).access_token}")
    before = cache.get(CONFIG_VERSION_KEY, 0)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        DOORS[door](browser, api, tenant_a, key, route)

    assert callbacks, "nothing was queued for after the commit"
    assert cache.get(CONFIG_VERSION_KEY, 0) != before

"""`/api/v1/routes`: validation, the tenant wall, and the version bump that reloads proxies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from core.config_version import CONFIG_VERSION_KEY
from gateway import services
from gateway.models import Route, Upstream
from tests.support.rows import row

pytestmark = pytest.mark.django_db(transaction=True)

Api = Callable[..., APIClient]


def route_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "orders",
        "path_prefix": "/wonderland/orders",
        "targets": ["http://127.0.0.1:9001"],
    }
    body.update(overrides)
    return body


def test_a_tenant_admin_creates_a_route_under_the_tenant_prefix(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/routes", route_body(methods=["get", "POST"]), format="json")

    assert response.status_code == 201, response.content
    route = response.json()
    assert route["path_prefix"] == "/wonderland/orders/"
    assert route["targets"] == ["http://127.0.0.1:9001"]
    assert route["methods"] == ["GET", "POST"]
    assert route["auth_mode"] == "jwt_or_api_key"
    assert route["tenant"] == alice.membership.tenant_id


def test_targets_keep_their_order_and_are_shared_upstreams(api: Api, alice: User) -> None:
    targets = ["http://b.internal:80", "http://a.internal:80"]
    api(alice).post("/api/v1/routes", route_body(targets=targets), format="json")

    second = api(alice).post(
        "/api/v1/routes", route_body(name="2", path_prefix="/wonderland/two/", targets=targets[::-1]), format="json"
    )

    assert second.json()["targets"] == targets[::-1]
    assert Upstream.objects.count() == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"path_prefix": "/wonderland/../admin/"}, "path_prefix"),
        ({"path_prefix": "/wonderland//x"}, "path_prefix"),
        ({"path_prefix": "wonderland/x"}, "path_prefix"),
        ({"path_prefix": "/wonderland/ x"}, "path_prefix"),
        ({"path_prefix": "/elsewhere/"}, "path_prefix"),
        ({"targets": []}, "targets"),
        ({"targets": ["ftp://x"]}, "targets"),
        ({"targets": ["http://user:pw@x"]}, "targets"),
        ({"targets": ["not a url"]}, "targets"),
        ({"methods": ["FETCH"]}, "methods"),
        ({"auth_mode": "magic"}, "auth_mode"),
        ({"max_body_bytes": -1}, "max_body_bytes"),
    ],
)
def test_invalid_routes_are_a_json_400(api: Api, alice: User, overrides: dict[str, object], field: str) -> None:
    version = cache.get(CONFIG_VERSION_KEY)

    response = api(alice).post("/api/v1/routes", route_body(**overrides), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert not Route.objects.exists()
    assert not Upstream.objects.exists()
    assert cache.get(CONFIG_VERSION_KEY) == version  # no proxy was told to reload


@pytest.mark.parametrize("prefix", ["/admin/", "/api/v2/", "/health", "/static/x/", "/"])
def test_staff_cannot_shadow_sentinels_own_paths(api: Api, staff: User, prefix: str) -> None:
    response = api(staff).post("/api/v1/routes", route_body(path_prefix=prefix), format="json")

    assert response.status_code == 400
    assert not Route.objects.exists()


def test_a_prefix_serves_one_route_only(api: Api, alice: User) -> None:
    first = api(alice).post("/api/v1/routes", route_body(), format="json").json()
    before = row(Route.objects.get(pk=first["id"]))

    response = api(alice).post(
        "/api/v1/routes", route_body(name="dup", targets=["http://127.0.0.1:9002"]), format="json"
    )

    assert response.status_code == 409
    assert list(Route.objects.values_list("pk", flat=True)) == [first["id"]]
    assert row(Route.objects.get(pk=first["id"])) == before
    assert Route.objects.get(pk=first["id"]).targets == ["http://127.0.0.1:9001"]


def test_staff_create_platform_routes(api: Api, staff: User) -> None:
    response = api(staff).post("/api/v1/routes", route_body(path_prefix="/payments/"), format="json")

    assert response.status_code == 201
    assert response.json()["tenant"] is None


def test_members_read_but_do_not_write_routes(api: Api, alice: User, bob: User) -> None:
    created = api(alice).post("/api/v1/routes", route_body(), format="json").json()
    before = row(Route.objects.get(pk=created["id"]))

    assert api(bob).get(f"/api/v1/routes/{created['id']}").status_code == 200
    assert api(bob).patch(f"/api/v1/routes/{created['id']}", {"active": False}, format="json").status_code == 403
    assert api(bob).post("/api/v1/routes", route_body(path_prefix="/wonderland/b/"), format="json").status_code == 403
    assert api(bob).delete(f"/api/v1/routes/{created['id']}").status_code == 403
    assert list(Route.objects.values_list("pk", flat=True)) == [created["id"]]
    assert row(Route.objects.get(pk=created["id"])) == before  # still active, same targets


def test_api_keys_need_api_write_to_change_routes(api: Api, alice: User, tenant_a: Tenant) -> None:
    _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])
    _, writer = account_services.api_key_create(tenant=tenant_a, name="w", scopes=["api:write"])

    assert api(api_key=reader).get("/api/v1/routes").status_code == 200
    assert api(api_key=reader).post("/api/v1/routes", route_body(), format="json").status_code == 403
    assert not Route.objects.exists()
    assert api(api_key=writer).post("/api/v1/routes", route_body(), format="json").status_code == 201
    created = Route.objects.get()
    before = row(created)
    url = f"/api/v1/routes/{created.pk}"
    assert api(api_key=reader).patch(url, {"targets": ["http://evil.example"]}, format="json").status_code == 403
    assert api(api_key=reader).delete(url).status_code == 403
    assert row(created) == before


class TestTenantWall:
    def test_mallory_neither_sees_nor_changes_alices_routes(self, api: Api, alice: User, mallory: User) -> None:
        created = api(alice).post("/api/v1/routes", route_body(), format="json").json()
        url = f"/api/v1/routes/{created['id']}"
        before = row(Route.objects.get(pk=created["id"]))

        assert api(mallory).get("/api/v1/routes").json()["count"] == 0
        assert api(mallory).get(url).status_code == 404
        assert api(mallory).patch(url, {"targets": ["http://evil.example"]}, format="json").status_code == 404
        assert api(mallory).delete(url).status_code == 404
        assert Route.objects.get(pk=created["id"]).targets == ["http://127.0.0.1:9001"]
        assert row(Route.objects.get(pk=created["id"])) == before  # still active, still alice's

    def test_mallory_cannot_capture_alices_paths(self, api: Api, alice: User, mallory: User) -> None:
        response = api(mallory).post("/api/v1/routes", route_body(), format="json")

        assert response.status_code == 400
        assert "path_prefix" in response.json()["error"]["details"]
        assert not Route.objects.exists()

    def test_mallory_cannot_create_in_alices_tenant(self, api: Api, alice: User, mallory: User) -> None:
        response = api(mallory).post("/api/v1/routes", route_body(tenant="wonderland"), format="json")

        assert response.status_code == 403
        assert not Route.objects.exists()

    def test_tenant_admins_do_not_see_platform_routes(self, api: Api, alice: User, staff: User) -> None:
        api(staff).post("/api/v1/routes", route_body(path_prefix="/payments/"), format="json")

        assert api(alice).get("/api/v1/routes").json()["count"] == 0


def test_every_change_moves_the_routes_version(api: Api, alice: User) -> None:
    before = cache.get(CONFIG_VERSION_KEY) or 0
    created = api(alice).post("/api/v1/routes", route_body(), format="json").json()
    after_create = cache.get(CONFIG_VERSION_KEY)
    api(alice).patch(f"/api/v1/routes/{created['id']}", {"active": False}, format="json")
    after_update = cache.get(CONFIG_VERSION_KEY)

    assert after_create > before
    assert after_update > after_create


def test_the_default_proxy_route_is_created_once() -> None:
    first = services.route_ensure_default(downstream_url="http://localhost:8080")
    services.route_update(route=first, targets=["http://127.0.0.1:9999"])

    again = services.route_ensure_default(downstream_url="http://localhost:8080")

    assert again.pk == first.pk
    assert again.targets == ["http://127.0.0.1:9999"]
    assert (again.path_prefix, again.tenant, again.strip_prefix) == ("/proxy/", None, True)


def test_active_routes_become_engine_specs(alice: User, tenant_a: Tenant) -> None:
    from gateway.selectors import route_specs

    services.route_create(tenant=tenant_a, name="a", path_prefix="/wonderland/a/", targets=["http://x:1", "http://y:2"])
    services.route_create(tenant=None, name="off", path_prefix="/off/", targets=["http://x:1"], active=False)

    (spec,) = route_specs()

    assert spec.path_prefix == "/wonderland/a/"
    assert spec.targets == ("http://x:1", "http://y:2")
    assert spec.tenant_uuid == str(tenant_a.uuid)


def test_tenants_and_keys_load_for_the_engine(tenant_a: Tenant, tenant_b: Tenant) -> None:
    from accounts.models import hash_api_key
    from gateway.selectors import api_key_info, tenant_infos

    account_services.tenant_update(tenant=tenant_b, base_rate_limit=5, active=False)
    key, raw = account_services.api_key_create(tenant=tenant_a, name="k", scopes=["proxy"])

    infos = {info.slug: info for info in tenant_infos()}
    found = api_key_info(key_hash=hash_api_key(raw))
    account_services.api_key_revoke(api_key=key)

    assert infos["evil"].overrides == {"BASE_RATE_LIMIT": 5}
    assert infos["evil"].active is False
    assert found is not None and found.tenant_uuid == str(tenant_a.uuid) and found.scopes == frozenset({"proxy"})
    assert api_key_info(key_hash=hash_api_key(raw)) is None


def test_tenant_changes_move_the_config_version(tenant_a: Tenant) -> None:
    before = cache.get(CONFIG_VERSION_KEY) or 0

    account_services.tenant_update(tenant=tenant_a, tier="vital")

    assert cache.get(CONFIG_VERSION_KEY) > before

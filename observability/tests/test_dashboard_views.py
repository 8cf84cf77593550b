"""`GET /stats/dashboard`, `/dashboard/` and `/login/` through Django's test client: who sees
which view, the tenant wall, and the tiles."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from core.tiles import DashboardScope, dashboard_tiles
from gateway.engine.proxy import RequestRecord
from observability.dashboard.fleet import Gauges
from observability.dashboard.live import Bucket
from observability.dashboard.producer import snapshots_produce
from observability.dashboard.scopes import fleet_store
from observability.models import Incident, IncidentKind, Severity
from tests.support.cast import PASSWORD
from tests.support.net import free_port
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db


def forget_snapshots() -> None:
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("observability:dashboard:*")
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def fresh_fleet(settings: Settings) -> Iterator[None]:
    """Each test starts with an empty fleet store (in memory, or in Redis under a prefix of its
    own) and no kept snapshot."""
    settings.CACHE_KEY_PREFIX = key_prefix("dash")
    fleet_store.cache_clear()
    forget_snapshots()
    yield
    forget_snapshots()
    fleet_store.cache_clear()


def traffic(tenant: Tenant, requests: int, *, status: int = 200, route: str = "/shop/") -> Bucket:
    bucket = Bucket(int(time.time()) - 2)
    for _ in range(requests):
        bucket.add(
            RequestRecord(
                correlation_id="c",
                trace_id="",
                route=route,
                tenant_key=str(tenant.uuid),
                tier="standard",
                method="GET",
                path=route,
                status=status,
                decision="forwarded",
                latency_ms=12.0,
            )
        )
    return bucket


@pytest.fixture
def two_tenants_traffic(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The last complete seconds: wonderland sent 7 requests on /shop/, evil 40 (5 answered 429)."""
    second = traffic(tenant_a, 7)
    second.merge(traffic(tenant_b, 35, route="/evil/"))
    second.merge(traffic(tenant_b, 5, status=429, route="/evil/"))
    fleet_store().push([second], Gauges("web", 1, 20.0))


def test_stats_dashboard_needs_a_signed_in_caller(api: Callable[..., APIClient]) -> None:
    response = api().get("/stats/dashboard")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_tenant_user_gets_their_tenant_view_only(
    api: Callable[..., APIClient], alice: User, bob: User, two_tenants_traffic: None
) -> None:
    for user in (alice, bob):
        snapshot = api(user).get("/stats/dashboard").json()
        assert snapshot["scope"] == {"tenant": "wonderland"}
        assert snapshot["traffic"]["requests_per_minute"] == 7
        assert snapshot["traffic"]["s429"] == 0
        assert snapshot["top_routes"] == [{"route": "/shop/", "requests": 7}]
        assert "evil" not in str(snapshot)


def test_a_tenant_user_cannot_pick_another_tenant(
    api: Callable[..., APIClient], mallory: User, tenant_a: Tenant, two_tenants_traffic: None
) -> None:
    response = api(mallory).get("/stats/dashboard", {"tenant": "wonderland"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert api(mallory).get("/stats/dashboard", {"tenant": "evil"}).json()["traffic"]["requests_per_minute"] == 40


def test_staff_see_the_fleet_and_may_pick_a_tenant(
    api: Callable[..., APIClient], staff: User, two_tenants_traffic: None
) -> None:
    fleet = api(staff).get("/stats/dashboard").json()
    assert fleet["scope"] == {"tenant": None}
    assert fleet["traffic"]["requests_per_minute"] == 47
    assert fleet["top_tenants"] == [{"tenant": "evil", "requests": 40}, {"tenant": "wonderland", "requests": 7}]
    evil = api(staff).get("/stats/dashboard", {"tenant": "evil"}).json()
    assert (evil["scope"]["tenant"], evil["traffic"]["requests_per_minute"], evil["traffic"]["s429"]) == ("evil", 40, 5)
    missing = api(staff).get("/stats/dashboard", {"tenant": "nobody"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_stats_dashboard_serves_what_the_producer_computed(
    api: Callable[..., APIClient], alice: User, staff: User, two_tenants_traffic: None
) -> None:
    # Given a tenant with a viewer (alice asked once), the fleet's view too (staff asked once),
    # and the producer's tick that follows
    api(alice).get("/stats/dashboard")
    api(staff).get("/stats/dashboard")
    produced = dict(snapshots_produce(fleet=fleet_store()))
    # Then the tick computed the fleet's view and wonderland's, each for its own group
    assert set(produced) == {"observability.snapshot", f"observability.snapshot.{alice.membership.tenant.uuid}"}
    # And both API answers are those very snapshots (same second, same figures)
    assert api(staff).get("/stats/dashboard").json() == produced["observability.snapshot"]


def test_the_producer_computes_nothing_while_nobody_watches(
    api: Callable[..., APIClient], staff: User, two_tenants_traffic: None
) -> None:
    assert snapshots_produce(fleet=fleet_store()) == []
    api(staff).get("/stats/dashboard", {"tenant": "evil"})  # one tenant's view is watched now
    assert [group for group, _ in snapshots_produce(fleet=fleet_store())] == [
        f"observability.snapshot.{Tenant.objects.get(slug='evil').uuid}"
    ]


def test_the_insight_tile_says_what_ai_insight_says_to_the_same_viewer_then_lists_its_incidents(
    api: Callable[..., APIClient], alice: User, mallory: User, staff: User
) -> None:
    now = timezone.now()
    wonderland, evil = alice.membership.tenant, mallory.membership.tenant
    for tenant, severity, summary in (
        (wonderland, Severity.CRITICAL, "Wonderland floods."),
        (evil, Severity.WARNING, "Evil floods."),
        (None, Severity.CRITICAL, "Traffic from 203.0.113.9 floods the fleet."),  # fleet-wide: staff's
    ):
        Incident.objects.create(
            kind=IncidentKind.FLOOD_TENANT, subject=tenant.slug if tenant else "203.0.113.9",
            tenant_uuid=tenant.uuid if tenant else None, severity=severity, summary=summary,
            first_seen=now, last_seen=now,
        )  # fmt: skip

    def insight(user: User) -> dict[str, Any]:
        tiles = api(user).get("/stats/dashboard").json()["tiles"]
        return next(tile for tile in tiles if tile["key"] == "insight")

    def labels(tile: dict[str, Any]) -> list[str]:
        return [row["label"] for row in tile["rows"]]

    for user, incidents in (
        (alice, ["Wonderland floods."]),
        (mallory, ["Evil floods."]),
        (staff, ["Traffic from 203.0.113.9 floods the fleet.", "Wonderland floods.", "Evil floods."]),
    ):
        told = api(user).get("/ai/insight").json()
        tile = insight(user)
        # The tile leads with /ai/insight's plain status sentence for the same viewer, then the
        # incidents, whose summaries are the rest of /ai/insight's sentences (each shown once).
        assert labels(tile) == told["sentences"][:1] + incidents, user
        assert told["sentences"][1:] == incidents
        assert tile["status"] == {"critical": "critical", "degraded": "warning"}[told["status"]]
        assert tile["figures"] == [
            {"label": "open", "value": told["open_incidents"]},
            {"label": "acknowledged", "value": 0},
        ]
    # A tenant's tile holds nothing of another tenant or of the fleet
    assert labels(insight(alice)) == ["Critical: 1 open incident (1 critical).", "Wonderland floods."]
    # An acknowledged incident says so, and counts apart from the open ones.
    wonderland_floods = Incident.objects.get(summary="Wonderland floods.")
    assert api(alice).post(f"/api/v1/incidents/{wonderland_floods.pk}/acknowledge").status_code == 200
    # The next snapshot (they are kept for a second) shows it.
    wait_until(lambda: insight(alice)["figures"][1]["value"] == 1, timeout=10, what="the next snapshot")
    assert insight(alice)["rows"][1]["value"].startswith("acknowledged · ")
    assert insight(alice)["figures"] == [{"label": "open", "value": 0}, {"label": "acknowledged", "value": 1}]
    assert insight(mallory)["status"] == "warning" and not any(
        "Wonderland" in label for label in labels(insight(mallory))
    )
    assert labels(insight(staff))[0] == "Critical: 3 open incidents (2 critical)."


def test_the_insight_tile_says_all_clear_without_incidents(api: Callable[..., APIClient], alice: User) -> None:
    tile = next(tile for tile in api(alice).get("/stats/dashboard").json()["tiles"] if tile["key"] == "insight")
    assert (tile["status"], [row["label"] for row in tile["rows"]]) == (
        "ok",
        api(alice).get("/ai/insight").json()["sentences"],
    )
    assert tile["rows"][0]["label"] == "All clear: no open incidents."


def test_every_registered_tile_renders_for_the_fleet_and_a_tenant(tenant_a: Tenant) -> None:
    keys = [tile.key for tile in dashboard_tiles()]
    assert keys == ["breakers", "insight", "rule_matches", "deliveries", "monitors", "fraud"]
    for scope in (DashboardScope(), DashboardScope(str(tenant_a.uuid), tenant_a.slug)):
        for tile in dashboard_tiles():
            data = tile(scope)
            assert data["status"] in {"ok", "warning", "critical", "idle"}
            assert isinstance(data["rows"], list) and data["empty"]


def test_the_dashboard_page_sends_visitors_to_the_login_page_which_tenant_users_pass(alice: User) -> None:
    client = Client()
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=/dashboard/")
    login = client.post("/login/?next=/dashboard/", {"username": "alice", "password": PASSWORD, "next": "/dashboard/"})
    assert login.status_code == 302 and login["Location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "wonderland" in html and 'data-socket="/ws/dashboard/"' in html
    assert "vendor/uplot/uPlot.iife.min.js" in html
    assert 'id="tenant-picker"' not in html  # only staff pick a tenant


def test_a_wrong_password_on_the_login_page_is_refused_and_counted(alice: User) -> None:
    response = Client().post("/login/", {"username": "alice", "password": "wrong-password"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_a_locked_out_login_page_answers_429_with_the_wait(alice: User) -> None:
    client = Client()
    for _ in range(5):
        assert client.post("/login/", {"username": "alice", "password": "wrong-password"}).status_code == 200
    # The right password now: refused before it is checked, as at the admin and /auth/token.
    locked = client.post("/login/?next=/dashboard/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert 1 <= int(locked["Retry-After"]) <= 900
    assert "Too many failed logins" in locked.content.decode() and 'name="password"' in locked.content.decode()
    assert client.get("/dashboard/").status_code == 302  # not signed in


def test_staff_pick_a_tenant_on_the_page(staff: User, tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = Client()
    client.force_login(staff)
    html = client.get("/dashboard/", {"tenant": "evil"}).content.decode()
    assert 'id="tenant-picker"' in html and '<option value="evil" selected>' in html
    assert 'data-socket="/ws/dashboard/?tenant=evil"' in html
    assert client.get("/dashboard/", {"tenant": "nobody"}).status_code == 404


def test_a_user_without_a_tenant_is_told_so(db: None) -> None:
    loner = User.objects.create_user(username="loner", email="l@example.com", password=PASSWORD)
    client = Client()
    client.force_login(loner)
    response = client.get("/dashboard/")
    assert response.status_code == 403 and "do not belong to a tenant" in response.content.decode()


def test_stats_dashboard_answers_503_when_redis_is_down(
    api: Callable[..., APIClient], alice: User, settings: Settings
) -> None:
    # Given a fleet store whose Redis does not answer (a port nothing listens on)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    fleet_store.cache_clear()
    response = api(alice).get("/stats/dashboard")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"]

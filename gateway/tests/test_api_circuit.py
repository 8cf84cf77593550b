"""`GET /circuit/status` and `POST /circuit/reset`: breaker state for operators, behind the wall."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from gateway import breaker_state, services
from gateway.engine.breaker import BreakerConfig, MemoryBreaker
from gateway.models import Upstream

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


@pytest.fixture(autouse=True)
def embedded_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    # In embedded mode the breakers live in the process's memory, shared with its proxy; stand in
    # one that trips after two failures.
    breaker = MemoryBreaker(BreakerConfig(min_volume=2))
    monkeypatch.setattr(breaker_state, "process_breaker", lambda: breaker)


@pytest.fixture(autouse=True)
def only_the_gateway_breakers(settings: Any) -> None:
    # These tests are about the routes' upstreams; the breakers of SENTINEL_CIRCUIT_SOURCES (the
    # fraud brain's) have their own tests (fraud/tests/test_endpoint_e2e.py).
    settings.SENTINEL_CIRCUIT_SOURCES = []


@pytest.fixture
def upstream() -> Iterator[str]:
    url = f"http://{uuid.uuid4().hex[:12]}.internal:8080"
    yield url
    breaker_state.breaker_reset(upstream=url)  # leaves no open breaker in a shared Redis


def trip(url: str) -> None:
    async def fail_until_open() -> None:
        async with breaker_state.breaker_store() as breaker:
            for _ in range(50):
                permit = await breaker.acquire(url)
                if not permit.allowed:
                    return
                await breaker.record(url, permit, success=False)

    async_to_sync(fail_until_open)()


def test_staff_see_every_breaker_and_reset_one(api: Api, staff: User, upstream: str) -> None:
    services.route_create(tenant=None, name="p", path_prefix="/payments/", targets=[upstream])
    trip(upstream)

    status = api(staff).get("/circuit/status").json()["breakers"]
    reset = api(staff).post("/circuit/reset", {"upstream": upstream}, format="json")
    after = api(staff).get("/circuit/status").json()["breakers"]

    assert [(b["upstream"], b["state"], b["state_code"], b["routes"]) for b in status] == [
        (upstream, "open", 1, ["/payments/"])
    ]
    assert reset.status_code == 200
    assert reset.json()["state"] == "closed"
    assert after[0]["state"] == "closed"


def test_tenants_see_only_their_own_upstreams(api: Api, alice: User, tenant_a: Tenant, upstream: str) -> None:
    services.route_create(tenant=tenant_a, name="a", path_prefix="/wonderland/a/", targets=[upstream])
    services.route_create(tenant=None, name="p", path_prefix="/payments/", targets=["http://secret.internal:1"])

    status = api(alice).get("/circuit/status").json()["breakers"]

    assert [b["upstream"] for b in status] == [upstream]


def test_only_staff_reset_breakers(api: Api, alice: User, tenant_a: Tenant, upstream: str) -> None:
    # Alice's own upstream, open: the one she would most like to close.
    services.route_create(tenant=tenant_a, name="a", path_prefix="/wonderland/a/", targets=[upstream])
    trip(upstream)
    before = breaker_state.breaker_states([upstream])[upstream]

    response = api(alice).post("/circuit/reset", {"upstream": upstream}, format="json")

    assert response.status_code == 403
    assert before["state"] == "open"
    assert breaker_state.breaker_states([upstream])[upstream] == before  # still open, same counts


@pytest.mark.parametrize("body", [{}, {"upstream": "not a url"}, {"upstream": "http://unknown.internal"}, [1]])
def test_bad_reset_requests_are_4xx(api: Api, staff: User, body: object, upstream: str) -> None:
    services.route_create(tenant=None, name="p", path_prefix="/payments/", targets=[upstream])
    trip(upstream)
    before = breaker_state.breaker_states([upstream])[upstream]

    response = api(staff).post("/circuit/reset", body, format="json")

    assert response.status_code in (400, 404)
    assert "error" in response.json()
    assert before["state"] == "open"
    assert breaker_state.breaker_states([upstream])[upstream] == before  # no breaker was reset instead


def test_status_needs_credentials() -> None:
    assert APIClient().get("/circuit/status").status_code == 401


def test_the_upstream_admin_shows_breaker_state_and_resets(staff: User, upstream: str) -> None:
    from django.test import Client

    services.route_create(tenant=None, name="p", path_prefix="/payments/", targets=[upstream])
    trip(upstream)
    client = Client()
    client.force_login(staff)

    page = client.get("/admin/gateway/upstream/").content.decode()
    pk = Upstream.objects.get(url=upstream).pk
    client.post("/admin/gateway/upstream/", {"action": "reset_breakers", "_selected_action": [pk]})

    assert "open, " in page  # e.g. "open, 5 of 5 calls failed"
    assert breaker_state.breaker_states([upstream])[upstream]["state"] == "closed"

"""The fraud brain's breaker in `GET /circuit/status` and `POST /circuit/reset` (fraud.breaker),
through the REST API in this process (embedded mode: the process's own MemoryBreaker; with
REDIS_URL, the shared one under the fraud prefix)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from accounts.models import User
from core.tiles import DashboardScope
from fraud.breaker import BREAKER_NAME, fraud_breaker_store, fraud_circuit_reset
from gateway.engine.breaker import Breaker
from observability.dashboard.tiles import BreakersTile

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


@pytest.fixture(autouse=True)
def closed_afterwards() -> Iterator[None]:
    yield
    fraud_circuit_reset()  # leaves no open breaker in a shared Redis


def trip() -> None:
    async def three_failures() -> None:
        async with fraud_breaker_store() as breaker:
            await fail(breaker, 3)

    async_to_sync(three_failures)()


async def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        permit = await breaker.acquire(BREAKER_NAME)
        await breaker.record(BREAKER_NAME, permit, success=False)


def brain_entry(client: APIClient) -> dict[str, Any]:
    response = client.get("/circuit/status")
    assert response.status_code == 200, response.content
    (entry,) = [entry for entry in response.json()["breakers"] if entry.get("name") == BREAKER_NAME]
    return dict(entry)


def test_every_authenticated_caller_sees_the_brain_breaker(api: Api, bob: User, mallory: User) -> None:
    entry = brain_entry(api(bob))
    assert entry["upstream"].startswith("grpc://") and entry["routes"] == []
    assert (entry["state"], entry["state_code"], entry["failures"], entry["total"]) == ("closed", 0, 0, 0)
    trip()
    for user in (bob, mallory):
        assert brain_entry(api(user))["state"] == "open"
    assert api().get("/circuit/status").status_code == 401


def test_staff_reset_it_by_name_or_upstream_and_others_may_not(api: Api, alice: User, staff: User) -> None:
    trip()
    assert api(alice).post("/circuit/reset", {"upstream": BREAKER_NAME}, format="json").status_code == 403
    response = api(staff).post("/circuit/reset", {"upstream": BREAKER_NAME}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["reset"], response.json()["state"]) == (True, "closed")
    upstream = brain_entry(api(staff))["upstream"]
    response = api(staff).post("/circuit/reset", {"upstream": upstream}, format="json")
    assert (response.status_code, response.json()["reset"]) == (200, False)  # closed already


def test_the_streak_shows_as_failures(api: Api, bob: User) -> None:
    async def two() -> None:
        async with fraud_breaker_store() as breaker:
            await fail(breaker, 2)

    async_to_sync(two)()
    assert (brain_entry(api(bob))["state"], brain_entry(api(bob))["failures"]) == ("closed", 2)


def test_the_dashboards_breakers_tile_shows_the_brains_first_when_open(alice: User) -> None:
    tile = BreakersTile()
    fleet, tenant = DashboardScope(), DashboardScope(str(alice.membership.tenant.uuid), alice.membership.tenant.slug)
    assert {"label": BREAKER_NAME, "value": "closed", "status": "ok"} in tile(fleet)["rows"]
    trip()
    for scope in (fleet, tenant):  # every tenant's payments depend on it
        data = tile(scope)
        assert data["rows"][0] == {"label": BREAKER_NAME, "value": "open", "status": "critical"}
        assert data["status"] == "critical"

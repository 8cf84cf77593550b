"""`/ws/dashboard/` through Channels' `WebsocketCommunicator`, on the real channel layer of the mode
(Redis with REDIS_URL, in-memory otherwise), fed by the real `DashboardRuntime` loops."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client
from pytest_django import Settings

from accounts.models import User
from gateway.engine.proxy import RequestRecord
from observability.dashboard.runtime import DashboardRuntime
from observability.dashboard.scopes import fleet_store
from observability.tests.test_dashboard_views import forget_snapshots
from sentinel_site.routing import websocket_urlpatterns
from tests.support.aio import run_bounded
from tests.support.redis_keys import key_prefix

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
# The longest scenario here takes about 8 s (7 s idle, then a frame), and stopping the runtime up to 5.
SCENARIO_SECONDS = 30
application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


@pytest.fixture(autouse=True)
def own_prefix(settings: Settings) -> Iterator[None]:
    """The fleet store and the producer's lease under a prefix of this test's own."""
    settings.CACHE_KEY_PREFIX = key_prefix("dash-ws")
    fleet_store.cache_clear()
    forget_snapshots()  # a socket is sent the kept snapshot when it connects: none of an earlier test
    yield
    fleet_store.cache_clear()


def session_cookie(user: User) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())
    ]


def run(scenario: Callable[[DashboardRuntime], Awaitable[T]]) -> T:
    """Runs `scenario` with a dashboard runtime started on the same event loop, stopped after;
    within SCENARIO_SECONDS, and the tasks it leaves (a refused socket's consumer) ending once
    cancelled (`run_bounded`: a hang fails in seconds, naming where it waits)."""

    async def main() -> T:
        runtime = DashboardRuntime()
        await runtime.start()
        try:
            return await scenario(runtime)
        finally:
            await runtime.stop()
            await close_thread_connections()

    return run_bounded(main(), timeout=SCENARIO_SECONDS, what="the dashboard scenario")


async def close_thread_connections() -> None:
    # Channels' database_sync_to_async runs in asgiref's one shared thread, whose connection
    # outlives this loop: closed here so the test database can be dropped.
    await sync_to_async(connections.close_all)()


def proxied(status: int = 200) -> RequestRecord:
    return RequestRecord(
        correlation_id="c", trace_id="", route="/a/", tenant_key=None, tier=None,
        method="GET", path="/a/x", status=status, decision="forwarded", latency_ms=8.0,
    )  # fmt: skip


def test_a_signed_in_socket_gets_a_frame_every_second_and_sees_requests_counted(staff: User) -> None:
    cookie = session_cookie(staff)

    async def scenario(runtime: DashboardRuntime) -> list[dict[str, Any]]:
        socket = WebsocketCommunicator(application, "/ws/dashboard/", headers=cookie)
        connected, _ = await socket.connect()
        assert connected
        frames = [await socket.receive_json_from(timeout=3)]
        for status in (200, 200, 429, 503, 200):
            runtime.recorder(proxied(status))
        started = time.monotonic()
        while len(frames) < 5:
            frames.append(await socket.receive_json_from(timeout=3))
        elapsed = time.monotonic() - started
        await socket.disconnect()
        return [*frames, {"elapsed": elapsed}]

    *frames, timing = run(scenario)
    # One frame per second: consecutive frames are one second apart in the producer's clock
    seconds = [frame["at"] for frame in frames]
    assert seconds == list(range(seconds[0], seconds[0] + 5)), seconds
    assert timing["elapsed"] < 8  # four frames, not a burst at the end of a long wait
    # And the requests recorded by this process's sink reached the snapshot within two frames
    last = frames[-1]["traffic"]
    assert (last["requests_per_minute"], last["s429"], last["s503"]) == (5, 1, 1)
    assert frames[-1]["fleet"]["processes"] == 1


def test_an_anonymous_socket_is_refused() -> None:
    async def scenario(runtime: DashboardRuntime) -> tuple[bool, int | None]:
        socket = WebsocketCommunicator(application, "/ws/dashboard/")
        connected, code = await socket.connect()
        return connected, code

    assert run(scenario) == (False, 4401)


def test_a_tenant_socket_gets_its_tenant_view_and_may_not_ask_for_another(
    alice: User, mallory: User, staff: User
) -> None:
    alice_cookie, mallory_cookie, staff_cookie = session_cookie(alice), session_cookie(mallory), session_cookie(staff)

    async def scenario(runtime: DashboardRuntime) -> tuple[dict[str, Any], tuple[bool, int | None]]:
        mine = WebsocketCommunicator(application, "/ws/dashboard/", headers=alice_cookie)
        assert (await mine.connect())[0]
        frame = await mine.receive_json_from(timeout=3)
        await mine.disconnect()
        picked = WebsocketCommunicator(application, "/ws/dashboard/?tenant=evil", headers=staff_cookie)
        assert (await picked.connect())[0]
        assert (await picked.receive_json_from(timeout=3))["scope"] == {"tenant": "evil"}
        await picked.disconnect()
        other = WebsocketCommunicator(application, "/ws/dashboard/?tenant=wonderland", headers=mallory_cookie)
        refused = await other.connect()
        await other.wait()  # the refused consumer has finished (no query left in flight)
        return frame, refused

    frame, refused = run(scenario)
    assert frame["scope"] == {"tenant": "wonderland"} and frame["top_tenants"] == []
    assert refused == (False, 4403)


def test_a_socket_idle_longer_than_the_layers_blocking_pop_stays_open(staff: User) -> None:
    # redis-py 8's default 5 s read timeout used to race channels_redis' 5 s BZPOPMIN and tear an
    # idle consumer down with a TimeoutError (settings.CHANNEL_LAYERS sets a longer one).
    cookie = session_cookie(staff)

    async def scenario() -> dict[str, Any]:
        socket = WebsocketCommunicator(application, "/ws/dashboard/", headers=cookie)
        assert (await socket.connect())[0]
        # Given no producer running: nothing reaches the socket for longer than the blocking pop
        assert await socket.receive_nothing(timeout=7, interval=0.5)
        # Then the consumer is still there to forward the next snapshot
        await get_channel_layer().group_send("observability.snapshot", {"type": "snapshot.push", "snapshot": {"at": 1}})
        frame = await socket.receive_json_from(timeout=3)
        await socket.disconnect()
        await close_thread_connections()
        return frame

    assert run_bounded(scenario(), timeout=SCENARIO_SECONDS, what="the idle socket scenario") == {"at": 1}

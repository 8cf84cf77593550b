"""The gateway as users run it: a real web process in front of a real upstream process."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from accounts.services import api_key_create
from gateway import services
from gateway.tests.test_gateway_frontdoor_e2e import _Recorder, recorder
from tests.support.net import free_port, http_request
from tests.support.processes import MockUpstreams, web_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["recorder"]  # the recording upstream's fixture, imported to be used here


@pytest.fixture
def upstream_port(mock_upstream: MockUpstreams) -> int:
    return mock_upstream("e2e").port


def redis_env() -> dict[str, str]:
    """Gateway processes sharing the machine's Redis under a key prefix of their own (their keys
    expire; nothing of another run or of `make run` is seen or touched)."""
    return {"REDIS_URL": require_redis(), "CACHE_KEY_PREFIX": key_prefix("e2e")}


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenSerializer.get_token(user).access_token}"}


def test_an_authenticated_request_is_proxied_and_bad_ones_get_json_errors(alice: User, upstream_port: int) -> None:
    services.route_create(
        tenant=None, name="default", path_prefix="/proxy/", targets=[f"http://127.0.0.1:{upstream_port}"]
    )

    _, raw_key = api_key_create(tenant=alice.membership.tenant, name="e2e")

    with web_process() as port:
        status, headers, body = http_request(port, "GET", "/proxy/orders?x=1", headers=bearer(alice))
        by_key = http_request(port, "GET", "/proxy/orders", headers={"X-API-Key": raw_key, "Authorization": "Mine"})
        missing = http_request(port, "GET", "/proxy/orders")
        traversal = http_request(port, "GET", "/proxy/../admin/", headers=bearer(alice))
        django = http_request(port, "GET", "/health")

    echo = json.loads(body)
    assert status == 200
    assert (echo["path"], echo["query"]) == ("/orders", "x=1")
    assert headers["x-upstream-name"] == "e2e"
    assert len(headers["x-correlation-id"]) == 32
    assert echo["headers"]["x-tenant-id"] == str(alice.membership.tenant.uuid)
    # Sentinel's credentials stay with Sentinel; the upstream's own Authorization passes through.
    assert "authorization" not in echo["headers"]
    key_echo = json.loads(by_key[2])["headers"]
    assert by_key[0] == 200
    assert "x-api-key" not in key_echo
    assert key_echo["authorization"] == "Mine"
    assert (missing[0], json.loads(missing[2])["error"]["code"]) == (401, "not_authenticated")
    assert traversal[0] == 400
    assert django[0] == 200


@pytest.mark.usefixtures("shared_cache")  # the config version is bumped here and read by the gateway
def test_a_route_change_reaches_a_running_gateway(alice: User, upstream_port: int) -> None:
    target = [f"http://127.0.0.1:{upstream_port}"]

    with web_process() as port:
        assert http_request(port, "GET", "/live/x")[0] == 404  # Django's 404: no such route yet
        services.route_create(tenant=None, name="live", path_prefix="/live/", targets=target, auth_mode="none")

        wait_until(lambda: http_request(port, "GET", "/live/x")[0] == 200, timeout=2, what="the new route to serve")


def raw_exchange(port: int, request: bytes) -> bytes:
    """Sends bytes as they are (no client library would send these) and returns the status line."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(65536)
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        b"GET /pub/../admin/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /pub/%2e%2e/admin/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /pub/a%2fb HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /pub/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET /pub/x HTTP/1.1\r\nHost: a\r\ntraceparent: " + b"f" * 20000 + b"\r\n\r\n",
        b"GET /pub/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST /pub/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=[
        "connect",
        "traversal",
        "encoded-traversal",
        "encoded-slash",
        "bad-header",
        "huge-traceparent",
        "huge-header",
        "cl-te",
    ],
)
def test_hostile_requests_get_a_clean_4xx(recorder: _Recorder, request_bytes: bytes) -> None:
    backend = f"http://127.0.0.1:{recorder.server_address[1]}"
    services.route_create(tenant=None, name="pub", path_prefix="/pub/", targets=[backend], auth_mode="none")

    with web_process() as port:
        status_line = raw_exchange(port, request_bytes)
        reached = recorder.settled()
        # A well-formed request on the same route, to show the recording upstream sees requests
        control = http_request(port, "GET", "/pub/control")

    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line
    assert reached == []  # the upstream was not even connected to
    assert control[0] == 200
    assert [request.split(b"\r\n", 1)[0] for request in recorder.settled()] == [b"GET /control HTTP/1.1"]


def test_exactly_the_limit_passes_across_two_gateway_processes(alice: User, upstream_port: int) -> None:
    # Pressure pinned at 0: this test is about the limiter, and a busy CI machine's latency must
    # not turn into shedding here.
    shared = {**redis_env(), "GATEWAY_FORCED_PRESSURE": "0"}
    tenant = alice.membership.tenant
    tenant.base_rate_limit, tenant.burst_capacity, tenant.refill_rate = 100, 1000, 1000.0
    tenant.save()
    route = services.route_create(
        tenant=None, name="exact", path_prefix="/exact/", targets=[f"http://127.0.0.1:{upstream_port}"], auth_mode="jwt"
    )
    headers = bearer(alice)

    async def burst(ports: list[int]) -> list[tuple[int, str | None, str | None, int]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as session:

            async def one(n: int) -> tuple[int, str | None, str | None, int]:
                port = ports[n % 2]
                async with session.get(f"http://127.0.0.1:{port}/exact/x", headers=headers) as response:
                    body = await response.read()
                    code = json.loads(body)["error"]["code"] if response.status >= 400 else None
                    return response.status, response.headers.get("ratelimit-remaining"), code, port

            return await asyncio.gather(*(one(n) for n in range(300)))

    with web_process(**shared) as first, web_process(**shared) as second:
        results = asyncio.run(burst([first, second]))

    outcomes = Counter((status, code) for status, _, code, _ in results)
    by_process = {
        port: Counter((status, code) for status, _, code, at in results if at == port) for port in (first, second)
    }
    passed = [remaining for status, remaining, _, _ in results if status == 200]
    assert len(passed) == 100, outcomes
    assert sorted(int(r) for r in passed) == list(range(100))
    assert outcomes[(429, "rate_limited")] == 200, outcomes
    assert route.pk
    # Both processes worked: each answered its 150 with the shared window's verdicts (alone, each
    # would have admitted 100 of its own, so neither can have refused fewer than 50).
    assert {port: sum(counts.values()) for port, counts in by_process.items()} == {first: 150, second: 150}
    assert all(set(counts) <= {(200, None), (429, "rate_limited")} for counts in by_process.values()), by_process
    assert all(counts[(429, "rate_limited")] >= 50 for counts in by_process.values()), by_process


def test_with_redis_unreachable_the_gateway_fails_open_on_its_local_limiter(alice: User, upstream_port: int) -> None:
    services.route_create(
        tenant=None, name="pub", path_prefix="/pub/", targets=[f"http://127.0.0.1:{upstream_port}"], auth_mode="none"
    )

    with web_process(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", BURST_CAPACITY="3", REFILL_RATE="0.01") as port:
        statuses = [http_request(port, "GET", "/pub/x")[0] for _ in range(5)]

    assert statuses == [200, 200, 200, 429, 429]  # forwarded, then held back by the local bucket


def test_a_breaker_opened_through_one_process_protects_the_other(alice: User, upstream_port: int) -> None:
    target = f"http://127.0.0.1:{upstream_port}"
    services.route_create(tenant=None, name="brk", path_prefix="/brk/", targets=[target], auth_mode="none")
    env = {"BREAKER_CONSECUTIVE_FAILURES": "4", "BREAKER_COOLDOWN_MS": "60000", "BURST_CAPACITY": "100", **redis_env()}

    with web_process(**env) as first, web_process(**env) as second:
        failures = [http_request(first, "GET", "/brk/status/503")[0] for _ in range(4)]
        status, headers, body = http_request(second, "GET", "/brk/anything")

    assert failures == [503] * 4
    assert (status, json.loads(body)["error"]["code"]) == (503, "breaker_open")
    assert "x-upstream-name" not in headers  # answered without touching the upstream
    assert int(headers["retry-after"]) >= 1

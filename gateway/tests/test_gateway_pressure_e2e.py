"""No shedding without overload (issue 8 item 8), with measured pressure and real processes.

Both sides, through a real `manage.py serve` (Redis mode, so the fleet exchange is in the loop):

- a few slow or failing calls to one upstream, with little in flight, shed nobody: the issue's
  20 fast + 2 slow requests, and the other faults of that kind (a slow route beside steady fast
  traffic, a burst of 5xx, of timeouts, of refused connections) — no standard or economy tenant
  on any route gets 503 `shed`;
- a sustained overload (requests held in flight by a slow upstream past a small capacity) sheds
  economy first, then standard, never vital, and lets go once it is over.

Assertions are on status codes and error codes per tier, never on timings: every wait is a
condition polled with a generous deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import Role, Tenant, Tier, User
from gateway import services
from tests.support.cast import make_member
from tests.support.net import free_port, http_request
from tests.support.processes import MockUpstreams, web_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# No local-bucket or window limit gets in the way; the breaker stays closed through a burst of
# failures, so every failure of the burst reaches the pressure gauge (the worst case for it).
GENEROUS = {
    "BURST_CAPACITY": "100000",
    "REFILL_RATE": "100000",
    "BASE_RATE_LIMIT": "100000",
    "BREAKER_CONSECUTIVE_FAILURES": "100000",
    "SLO_LATENCY_THRESHOLD": "200",
}


def shared_redis() -> dict[str, str]:
    # A prefix of its own: the fleet's pressure hash must hold this test's processes only.
    return {"REDIS_URL": require_redis(), "CACHE_KEY_PREFIX": key_prefix("pressure")}


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenSerializer.get_token(user).access_token}"}


def error_code(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture
def healthy(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("healthy").url


@pytest.fixture
def troubled(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("troubled").url


@pytest.fixture
def vera(db: None) -> User:
    """The admin of a vital tenant."""
    return make_member("vera", Tenant.objects.create(name="Hospital", slug="hospital", tier=Tier.VITAL), Role.ADMIN)


# --- (a) a few slow or failing calls shed nothing --------------------------------------------


@dataclass(frozen=True)
class Noise:
    """Traffic that troubles one upstream: `calls` requests to `path` on the troubled route,
    `parallel` at a time, beside `fast` requests on the healthy route."""

    path: str
    calls: int
    fast: int = 20
    parallel: int = 1
    timeout_ms: int | None = None
    dead_target: bool = False


NOISES = {
    # The issue's own: 20 fast requests and 2 that take 0.5 s at an SLO of 200 ms.
    "issue-20-fast-2-slow": Noise(path="/delay/500", calls=2),
    # One tenant's slow export endpoint beside steady fast traffic on another route.
    "slow-route-beside-steady-traffic": Noise(path="/delay/500", calls=24, fast=150, parallel=3),
    "burst-of-5xx": Noise(path="/status/500", calls=25),
    "burst-of-503": Noise(path="/status/503", calls=25, parallel=3),
    "burst-of-timeouts": Noise(path="/delay/5000", calls=25, parallel=5, timeout_ms=100),
    "burst-of-refused-connections": Noise(path="/x", calls=25, dead_target=True),
}


async def make_noise(port: int, noise: Noise, fast_headers: dict[str, str]) -> Counter[int]:
    """Sends the noise (troubled calls and fast calls at once); the statuses it got."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def get(path: str, headers: dict[str, str] | None = None) -> int:
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
                await response.read()
                return response.status

        async def troubled_stream(share: int) -> list[int]:
            return [await get(f"/trouble{noise.path}") for _ in range(share)]

        async def fast_stream() -> list[int]:
            return [await get("/alpha/fast", fast_headers) for _ in range(noise.fast)]

        shares = [noise.calls // noise.parallel + (n < noise.calls % noise.parallel) for n in range(noise.parallel)]
        results = await asyncio.gather(fast_stream(), *(troubled_stream(share) for share in shares))
    return Counter(status for statuses in results for status in statuses)


PROBES = ("standard on alpha", "economy on alpha", "anonymous economy on beta", "standard on the troubled route")
# Probes in rounds over ~1.5 s: what users calling after the noise would meet. (Today's gauge caches
# its window for 0.25 s, so probes packed into one such slice could all miss the shedding.)
PROBE_ROUNDS = 5
PROBE_SPACING_S = 0.3


@pytest.mark.parametrize("kind", list(NOISES))
def test_a_few_slow_or_failing_calls_shed_no_tenant_on_any_route(
    kind: str, alice: User, mallory: User, healthy: str, troubled: str
) -> None:
    noise = NOISES[kind]
    target = f"http://127.0.0.1:{free_port()}" if noise.dead_target else troubled  # nobody listens there
    services.route_create(tenant=None, name="a", path_prefix="/alpha/", targets=[healthy], auth_mode="jwt_or_api_key")
    services.route_create(tenant=None, name="b", path_prefix="/beta/", targets=[healthy], auth_mode="none")
    services.route_create(
        tenant=None,
        name="trouble",
        path_prefix="/trouble/",
        targets=[target],
        auth_mode="none",
        timeout_ms=noise.timeout_ms,
    )
    standard, economy = bearer(alice), bearer(mallory)

    with web_process(**GENEROUS, **shared_redis()) as port:
        wait_until(
            lambda: http_request(port, "GET", "/beta/ready")[0] == 200, timeout=30, what="the routes to be loaded"
        )
        # Given a few slow or failing calls to one upstream, with fast traffic beside them
        noisy = asyncio.run(make_noise(port, noise, standard))
        # When tenants of every shedable tier call, on every route, for the next second or two
        probes: dict[str, list[tuple[int, dict[str, str], bytes]]] = {who: [] for who in PROBES}
        for _ in range(PROBE_ROUNDS):
            probes["standard on alpha"].append(http_request(port, "GET", "/alpha/x", headers=standard))
            probes["economy on alpha"].append(http_request(port, "GET", "/alpha/x", headers=economy))
            probes["anonymous economy on beta"].append(http_request(port, "GET", "/beta/x"))
            probes["standard on the troubled route"].append(http_request(port, "GET", "/trouble/x", headers=standard))
            time.sleep(PROBE_SPACING_S)  # spread like steady traffic, not a wait for a condition

    # Then the noise was what it claims to be (slow successes, or failures that are not `shed`)
    assert sum(noisy.values()) == noise.calls + noise.fast
    assert noisy[200] >= noise.fast, noisy
    # And nobody is shed: each tenant gets through (or the troubled upstream's own answer)
    outcomes = {
        who: Counter((status, error_code(body)) for status, _, body in answers) for who, answers in probes.items()
    }
    shed = {who: n for who, counts in outcomes.items() if (n := counts[(503, "shed")])}
    assert shed == {}, outcomes
    for who in PROBES[:3]:
        assert outcomes[who] == Counter({(200, None): PROBE_ROUNDS}), outcomes


# --- (b) a sustained overload sheds economy first, then standard, never vital ----------------


class Gate:
    """A slow upstream the test controls: `/hold` answers only once `release()` is called;
    anything else answers 200 at once. Counts the holds waiting."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.waiting = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.endswith("/hold"):
                    with gate._lock:
                        gate.waiting += 1
                    gate._released.wait(timeout=300)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="gate", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    server = Gate()
    yield server
    server.close()


def held_request(port: int, path: str, headers: dict[str, str]) -> int:
    """One request that may stay in flight for minutes; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_sustained_overload_sheds_economy_first_then_standard_never_vital(
    vera: User, alice: User, mallory: User, gate: Gate
) -> None:
    services.route_create(tenant=None, name="svc", path_prefix="/svc/", targets=[gate.url], auth_mode="jwt_or_api_key")
    services.route_create(tenant=None, name="anon", path_prefix="/anon/", targets=[gate.url], auth_mode="none")
    tiers = {"vital": bearer(vera), "standard": bearer(alice), "economy": bearer(mallory)}
    # A small capacity for the test: 20 requests in flight is a full process.
    env = {**GENEROUS, **shared_redis(), "GATEWAY_CAPACITY": "20"}

    def probe(tier: str) -> tuple[int, str | None, str | None]:
        status, headers, body = http_request(port, "GET", "/svc/fast", headers=tiers[tier])
        return status, error_code(body), headers.get("retry-after")

    def shed(tier: str) -> Callable[[], bool]:
        return lambda: probe(tier)[:2] == (503, "shed")

    with web_process(**env) as port, ThreadPoolExecutor(max_workers=24) as pool:
        wait_until(lambda: probe("vital")[0] == 200, timeout=30, what="the routes to be loaded")
        holds: list[Future[int]] = []

        def hold(count: int) -> None:
            """`count` more vital requests held in flight by the slow upstream."""
            expected = len(holds) + count
            holds.extend(pool.submit(held_request, port, "/svc/hold", tiers["vital"]) for _ in range(count))
            wait_until(lambda: gate.waiting == expected, timeout=60, what=f"{expected} requests held in flight")

        # Given 16 requests held in flight (80 % of the capacity), sustained
        hold(16)
        # Then economy is shed once pressure has followed, while standard and vital get through
        wait_until(shed("economy"), timeout=60, what="economy to be shed at 80 % of capacity", interval=0.2)
        at_80 = {tier: probe(tier) for tier in ("economy", "standard", "vital")}
        anonymous_at_80 = http_request(port, "GET", "/anon/fast")

        # Given 6 more (110 % of the capacity)
        hold(6)
        # Then standard is shed too, and vital still gets through
        wait_until(shed("standard"), timeout=60, what="standard to be shed at 110 % of capacity", interval=0.2)
        over = {tier: probe(tier) for tier in ("economy", "standard", "vital")}

        # When the overload ends
        gate.release()
        held = Counter(future.result(timeout=120) for future in holds)
        # Then pressure lets go: economy gets through again
        wait_until(lambda: probe("economy")[0] == 200, timeout=60, what="economy to be admitted once the load is gone")
        after = {tier: probe(tier)[:2] for tier in ("economy", "standard", "vital")}

    assert {tier: answer[:2] for tier, answer in at_80.items()} == {
        "economy": (503, "shed"),
        "standard": (200, None),
        "vital": (200, None),
    }
    assert (anonymous_at_80[0], error_code(anonymous_at_80[2])) == (503, "shed")
    assert {tier: answer[:2] for tier, answer in over.items()} == {
        "economy": (503, "shed"),
        "standard": (503, "shed"),
        "vital": (200, None),
    }
    assert all(int(answer[2] or 0) >= 1 for answer in (at_80["economy"], over["standard"]))  # Retry-After
    assert held == Counter({200: 22})  # vital was never shed, even past the capacity
    assert after == {"economy": (200, None), "standard": (200, None), "vital": (200, None)}


async def flood(
    port: int, clients: dict[str, tuple[int, dict[str, str]]], path: str, calls: int
) -> dict[str, Counter[tuple[int, str | None]]]:
    """Closed-loop clients (`clients[tier]` = how many, their headers), each making `calls`
    requests to `path` one after the other, all at once; (status, error code) counts per tier."""
    owners = [(tier, headers) for tier, (count, headers) in clients.items() for _ in range(count)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), connector=connector) as session:

        async def client(headers: dict[str, str]) -> list[tuple[int, str | None]]:
            outcomes = []
            for _ in range(calls):
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
                    body = await response.read()
                    outcomes.append((response.status, error_code(body) if response.status >= 400 else None))
            return outcomes

        results = await asyncio.gather(*(client(headers) for _, headers in owners))
    counts: dict[str, Counter[tuple[int, str | None]]] = {tier: Counter() for tier in clients}
    for (tier, _), outcomes in zip(owners, results, strict=True):
        counts[tier].update(outcomes)
    return counts


def test_a_flood_of_slow_requests_past_capacity_sheds_standard_and_economy_never_vital(
    vera: User, alice: User, mallory: User, healthy: str
) -> None:
    services.route_create(tenant=None, name="svc", path_prefix="/svc/", targets=[healthy], auth_mode="jwt_or_api_key")
    env = {**GENEROUS, **shared_redis(), "GATEWAY_CAPACITY": "10"}
    # 12 vital clients alone keep 120 % of the capacity in flight for 15 x 0.3 s at least.
    clients = {"vital": (12, bearer(vera)), "standard": (8, bearer(alice)), "economy": (8, bearer(mallory))}

    with web_process(**env) as port:
        wait_until(
            lambda: http_request(port, "GET", "/svc/x", headers=bearer(vera))[0] == 200,
            timeout=30,
            what="the routes to be loaded",
        )
        counts = asyncio.run(flood(port, clients, "/svc/delay/300", calls=15))

    assert counts["vital"] == Counter({(200, None): 12 * 15}), counts
    for tier in ("standard", "economy"):
        assert set(counts[tier]) <= {(200, None), (503, "shed")}, counts
        assert counts[tier][(503, "shed")] >= 1, counts

"""The gateway's promises under failure, with real processes: half-open probes shared by the
fleet, tier shedding, Redis lost, hung and back, the operator's view and reset of a breaker that
real traffic tripped, and 200 MB bodies with flat memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import Tenant, User
from gateway import services
from tests.support.net import free_port, http_request, tcp_relay
from tests.support.processes import MockUpstreams, web_process, web_server
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# No local-bucket or window limit gets in the way unless a test asks for one.
GENEROUS = {"BURST_CAPACITY": "100000", "REFILL_RATE": "100000", "BASE_RATE_LIMIT": "100000"}


@pytest.fixture
def upstream(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("resilience").url


def shared_redis(url: str | None = None) -> dict[str, str]:
    return {"REDIS_URL": url or require_redis(), "CACHE_KEY_PREFIX": key_prefix("resilience")}


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenSerializer.get_token(user).access_token}"}


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def breaker_seen(port: int, operator: dict[str, str], upstream: str) -> dict[str, object]:
    """The upstream's entry in ``GET /circuit/status`` as the web process on ``port`` reports it."""
    status, _, body = http_request(port, "GET", "/circuit/status", headers=operator)
    assert status == 200, body
    (entry,) = [entry for entry in json.loads(body)["breakers"] if entry["upstream"] == upstream]
    return dict(entry)


def test_half_open_admits_exactly_the_configured_probes_across_two_processes(staff: User, upstream: str) -> None:
    services.route_create(tenant=None, name="hop", path_prefix="/hop/", targets=[upstream], auth_mode="none")
    env = {
        **GENEROUS,
        **shared_redis(),
        "GATEWAY_FORCED_PRESSURE": "0",
        "BREAKER_CONSECUTIVE_FAILURES": "2",
        "BREAKER_COOLDOWN_MS": "1000",
        "BREAKER_HALF_OPEN_MAX_REQUESTS": "3",
    }

    async def probe_burst(ports: list[int]) -> dict[int, Counter[tuple[int, str | None]]]:
        async with aiohttp.ClientSession() as session:

            async def one(n: int) -> tuple[int, int, str | None]:
                # Slow successes: every probe is still in flight when the last request arrives.
                port = ports[n % 2]
                async with session.get(f"http://127.0.0.1:{port}/hop/delay/1500") as response:
                    body = await response.read()
                    return port, response.status, error_code(body) if response.status >= 400 else None

            answers = await asyncio.gather(*(one(n) for n in range(20)))
        return {port: Counter((status, code) for at, status, code in answers if at == port) for port in ports}

    operator = bearer(staff)
    with web_process(**env) as first, web_process(**env) as second:
        # Given a breaker opened by two failures through the first process
        assert [http_request(first, "GET", "/hop/status/500")[0] for _ in range(2)] == [500, 500]
        assert error_code(http_request(second, "GET", "/hop/x")[2]) == "breaker_open"
        # Once its cooldown is over (the breaker reads half-open; reading it takes no probe)
        wait_until(
            lambda: breaker_seen(second, operator, upstream)["state"] == "half_open",
            timeout=10,
            what="the breaker's cooldown to end",
        )
        # When 20 requests arrive at once through both processes, half-open
        by_process = asyncio.run(probe_burst([first, second]))
        # Then the probes succeeded and closed the breaker for everyone
        after = http_request(second, "GET", "/hop/x")[0]

    outcomes = sum(by_process.values(), Counter())
    assert outcomes == Counter({(200, None): 3, (503, "breaker_open"): 17}), outcomes
    assert after == 200
    # Both processes took part: each answered its ten, and each refused from the shared half-open
    # state (a breaker of its own would have let its own three probes through).
    assert {port: sum(counts.values()) for port, counts in by_process.items()} == {first: 10, second: 10}
    assert all(counts[(503, "breaker_open")] >= 7 for counts in by_process.values()), by_process


@pytest.mark.parametrize("mode", ["redis", "embedded"])
def test_circuit_status_and_reset_act_on_a_breaker_tripped_by_real_traffic(
    mode: str, staff: User, upstream: str
) -> None:
    """No stand-in state: failures through a web process trip the breaker the proxy uses, and the
    operator's endpoints read and reset that breaker (in Redis, shared by two processes; or in
    the one embedded process's proxy)."""
    services.route_create(tenant=None, name="cr", path_prefix="/cr/", targets=[upstream], auth_mode="none")
    quiet = {
        **GENEROUS,
        "GATEWAY_FORCED_PRESSURE": "0",
        "BREAKER_CONSECUTIVE_FAILURES": "3",
        "BREAKER_COOLDOWN_MS": "600000",  # stays open for the whole test unless reset
    }
    env = {**quiet, **shared_redis()} if mode == "redis" else {**quiet, "REDIS_URL": None}
    operator = bearer(staff)
    reset_body = json.dumps({"upstream": upstream}).encode()

    with contextlib.ExitStack() as processes:
        traffic = processes.enter_context(web_process(**env))
        # In Redis mode the operator asks another process than the one that carried the traffic.
        ops = processes.enter_context(web_process(**env)) if mode == "redis" else traffic
        # Given a closed breaker, opened by three failing calls through the gateway
        before = breaker_seen(ops, operator, upstream)
        failures = [http_request(traffic, "GET", "/cr/status/500")[0] for _ in range(3)]
        refused = http_request(traffic, "GET", "/cr/x")
        # When the operator looks, and resets it
        tripped = breaker_seen(ops, operator, upstream)
        reset = http_request(
            ops, "POST", "/circuit/reset", body=reset_body, headers={**operator, "Content-Type": "application/json"}
        )
        after = breaker_seen(traffic, operator, upstream)
        served = http_request(traffic, "GET", "/cr/x")

    assert (before["state"], before["total"]) == ("closed", 0)
    assert failures == [500] * 3
    assert (refused[0], error_code(refused[2])) == (503, "breaker_open")
    # Then the status showed what the traffic did
    assert (tripped["state"], tripped["state_code"], tripped["routes"]) == ("open", 1, ["/cr/"])
    assert tripped["opened_at_ms"] is not None
    # And the reset closed the breaker the proxy uses: the next request goes through
    assert reset[0] == 200, reset
    assert {key: json.loads(reset[2])[key] for key in ("upstream", "reset", "state")} == {
        "upstream": upstream,
        "reset": True,
        "state": "closed",
    }
    assert after["state"] == "closed"
    assert served[0] == 200


def test_under_pressure_economy_is_shed_first_and_vital_never(alice: User, mallory: User, upstream: str) -> None:
    Tenant.objects.filter(pk=alice.membership.tenant.pk).update(tier="vital")
    Tenant.objects.filter(pk=mallory.membership.tenant.pk).update(tier="standard")
    services.route_create(
        tenant=None, name="tier", path_prefix="/tier/", targets=[upstream], auth_mode="jwt_or_api_key"
    )
    services.route_create(tenant=None, name="anon", path_prefix="/anon/", targets=[upstream], auth_mode="none")

    with (
        web_process(**GENEROUS, GATEWAY_FORCED_PRESSURE="80") as high,
        web_process(**GENEROUS, GATEWAY_FORCED_PRESSURE="95") as extreme,
    ):
        at_80 = {
            "economy": http_request(high, "GET", "/anon/x"),
            "standard": http_request(high, "GET", "/tier/x", headers=bearer(mallory)),
            "vital": http_request(high, "GET", "/tier/x", headers=bearer(alice)),
        }
        at_95 = {
            "economy": http_request(extreme, "GET", "/anon/x"),
            "standard": http_request(extreme, "GET", "/tier/x", headers=bearer(mallory)),
            "vital": http_request(extreme, "GET", "/tier/x", headers=bearer(alice)),
        }

    assert {tier: answer[0] for tier, answer in at_80.items()} == {"economy": 503, "standard": 200, "vital": 200}
    assert {tier: answer[0] for tier, answer in at_95.items()} == {"economy": 503, "standard": 503, "vital": 200}
    shed = at_95["standard"]
    assert error_code(shed[2]) == "shed"
    assert int(shed[1]["retry-after"]) >= 1


def test_with_redis_unreachable_and_fail_mode_closed_the_gateway_answers_503(upstream: str) -> None:
    services.route_create(tenant=None, name="pub", path_prefix="/pub/", targets=[upstream], auth_mode="none")

    with web_process(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", RATE_LIMIT_FAIL_MODE="closed") as port:
        status, headers, body = http_request(port, "GET", "/pub/x")

    assert (status, error_code(body)) == (503, "limiter_unavailable")
    assert headers["retry-after"] == "1"
    assert "x-upstream-name" not in headers


def test_the_distributed_limit_comes_back_when_redis_does(upstream: str) -> None:
    redis_port = urlsplit(require_redis()).port or 6379
    services.route_create(
        tenant=None, name="rec", path_prefix="/rec/", targets=[upstream], auth_mode="none", base_rate_limit=4
    )

    with tcp_relay(redis_port) as relay:
        env = {**shared_redis(f"redis://127.0.0.1:{relay.port}/0"), "BURST_CAPACITY": "1000", "REFILL_RATE": "1000"}
        with web_process(**env) as port:
            # Given an anonymous (economy: half of 4) client at its window limit
            limited = [http_request(port, "GET", "/rec/x")[0] for _ in range(3)]
            # When Redis becomes unreachable, the gateway fails open on its local bucket
            relay.cut()
            while_down = [http_request(port, "GET", "/rec/x")[0] for _ in range(3)]
            # Then once Redis is back, the window (still holding the two admissions) applies again
            relay.start()
            wait_until(
                lambda: http_request(port, "GET", "/rec/x")[0] == 429, timeout=10, what="the limiter to come back"
            )

    assert limited == [200, 200, 429]
    assert while_down == [200, 200, 200]


class HungRedis(socketserver.ThreadingTCPServer):
    """Accepts connections and reads what arrives, never answering a byte: each connection's
    bytes, as received, in ``connections``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), HungRedisHandler)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server_address[1]}/0"

    def commands(self, name: bytes) -> list[int]:
        """How many ``name`` commands each connection that sent any carried (RESP arrays)."""
        with self.lock:
            counts = [data.count(b"\r\n$%d\r\n%s\r\n" % (len(name), name)) for data in self.connections]
        return [count for count in counts if count]


class HungRedisHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: HungRedis = self.server  # type: ignore[assignment]
        received = bytearray()
        with server.lock:
            server.connections.append(received)
        with contextlib.suppress(OSError):
            while chunk := self.request.recv(65536):
                with server.lock:
                    received += chunk


@contextlib.contextmanager
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    threading.Thread(target=server.serve_forever, name="hung-redis", daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_hung_redis_costs_one_timeout_not_one_per_request(upstream: str) -> None:
    services.route_create(tenant=None, name="pub", path_prefix="/pub/", targets=[upstream], auth_mode="none")
    with hung_redis() as hung, web_process(**GENEROUS, **shared_redis(hung.url)) as port:
        statuses = [http_request(port, "GET", "/pub/x")[0] for _ in range(20)]
        # The limiter's and the breaker's scripts, per connection of the proxy's Redis client
        scripts = hung.commands(b"EVALSHA")

    assert statuses == [200] * 20
    # Counted, not timed: each connection carried one script, which its timeout failed (nothing
    # was queued behind a hung call), and the client then stayed down instead of reconnecting for
    # the next request. Paying the timeout on each request (limiter, then breaker) makes 40
    # connections; staying down, the client reconnects at most once per 1.5 s (0.5 s timeout, 1 s
    # down), so fewer than 10 here unless the 20 requests took over 13 s.
    assert scripts, "the proxy never reached the hung Redis"
    assert set(scripts) == {1}, scripts
    assert len(scripts) < len(statuses) // 2, scripts


def peak_and_current_rss_kib(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def test_200_mb_stream_up_and_down_through_the_gateway_with_flat_memory(upstream: str) -> None:
    size, chunk = 200 * 1024 * 1024, b"s" * (1024 * 1024)
    services.route_create(
        tenant=None,
        name="big",
        path_prefix="/big/",
        targets=[upstream],
        auth_mode="none",
        max_body_bytes=size + 1,
        timeout_ms=120_000,
    )

    with web_server(**GENEROUS) as (port, process):
        http_request(port, "GET", "/big/warm-up")
        _, rss_before = peak_and_current_rss_kib(process.pid)
        status, _, body = http_request(port, "POST", "/big/upload", body=(chunk for _ in range(size // len(chunk))))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", f"/big/bytes/{size}")
        response = conn.getresponse()
        downloaded = 0
        while block := response.read(1024 * 1024):
            downloaded += len(block)
        conn.close()
        peak, _ = peak_and_current_rss_kib(process.pid)

    echo = json.loads(body)
    assert status == 200
    assert echo["body_bytes"] == size
    assert echo["body_sha256"] == hashlib.sha256(chunk * (size // len(chunk))).hexdigest()
    assert (response.status, downloaded) == (200, size)
    # 400 MB went through; the process never held more than a few MB of it at once.
    assert (peak - rss_before) < 64 * 1024, f"peak RSS grew by {(peak - rss_before) // 1024} MiB"

"""The proxy's lifecycle, driven through its ASGI interface against a real upstream on loopback.

In-memory limiter and breaker here; the Redis-backed ones have their own tests, and the
two-process tests of the whole gateway run it as real web processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import jwt

from core.errors import OWN_ANSWER_HEADERS
from gateway.engine.auth import ApiKeyResolver, Authenticator, JwtVerifier, TenantDirectory, TenantInfo
from gateway.engine.breaker import BreakerConfig, MemoryBreaker
from gateway.engine.forwarder import Forwarder
from gateway.engine.pressure import PressureGauge, TierAdmission
from gateway.engine.proxy import GatewayConfig, Proxy, RequestRecord
from gateway.engine.ratelimit import MemoryWindowLimiter
from gateway.engine.routes import RouteSpec, RouteTable
from gateway.mock_upstream import start_upstream

KEY = "s" * 40
VITAL = TenantInfo(uuid="33333333-3333-3333-3333-333333333333", slug="vip", tier="vital")
Response = tuple[int, dict[str, str], bytes]


def bearer(tenant: TenantInfo = VITAL) -> str:
    claims = {"token_type": "access", "user_id": 1, "tenant": tenant.uuid, "exp": int(time.time()) + 60}
    return "Bearer " + jwt.encode(claims, KEY, algorithm="HS256")


async def no_keys(digest: str) -> None:
    return None


async def fallback(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


class Harness:
    def __init__(self, port: int, *, config: GatewayConfig | None = None, breaker: MemoryBreaker | None = None):
        self.records: list[RequestRecord] = []
        self.proxy = Proxy(
            config=config or GatewayConfig(),
            fallback=fallback,
            authenticator=Authenticator(
                jwt_verifier=JwtVerifier(KEY), keys=ApiKeyResolver(no_keys), tenant_header="x-tenant-id"
            ),
            window_limiter=MemoryWindowLimiter(),
            breaker=breaker or MemoryBreaker(BreakerConfig()),
            forwarder=Forwarder(),
            gauge=PressureGauge(capacity=100, slo_ms=200),
            admission=TierAdmission(standard_at=90, economy_at=70),
            on_complete=self.records.append,
        )
        public = RouteSpec(
            id=1, name="public", path_prefix="/pub/", targets=(f"http://127.0.0.1:{port}",), auth_mode="none"
        )
        private = RouteSpec(
            id=2, name="private", path_prefix="/proxy/", targets=(f"http://127.0.0.1:{port}",), auth_mode="jwt"
        )
        get_only = replace(public, id=3, name="get-only", path_prefix="/ro/", methods=frozenset({"GET"}))
        self.proxy.state.routes = RouteTable([public, private, get_only])
        self.proxy.state.tenants = TenantDirectory([VITAL])

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", *, sent_path: str = ""
    ) -> Response:
        """`path` as the server decoded it; `sent_path` the client's octets (`path` when empty)."""
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        raw_path = (sent_path or path).encode("latin-1")
        scope = {
            "type": "http", "method": method, "path": path, "raw_path": raw_path, "query_string": b"",
            "headers": [(b"host", b"gw.test"), *raw], "scheme": "http", "client": ("198.51.100.4", 5555),
            "server": ("127.0.0.1", 8000), "http_version": "1.1",
        }  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.proxy(scope, receive, send)
        start = sent[0]
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], response_headers, b"".join(m.get("body", b"") for m in sent[1:])


def run(scenario: Callable[[Harness], Awaitable[None]], **kw: Any) -> Harness:
    async def main() -> Harness:
        runner, port = await start_upstream(name="up")
        harness = Harness(port, **kw)
        try:
            await scenario(harness)
        finally:
            await harness.proxy.forwarder.close()
            await runner.cleanup()
        return harness

    return asyncio.run(main())


def test_a_request_is_forwarded_with_prefix_stripped_and_trace_continued() -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def scenario(h: Harness) -> None:
        status, headers, body = await h.request(
            "GET", "/pub/orders/7", {"traceparent": incoming, "x-correlation-id": "abc-1", "x-tenant-id": "forged"}
        )
        echo = json.loads(body)
        assert status == 200
        assert echo["path"] == "/orders/7"
        assert echo["headers"]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert echo["headers"]["traceparent"] != incoming  # a new span under the client's
        assert echo["headers"]["x-correlation-id"] == "abc-1"
        assert echo["headers"]["x-tenant-id"] == "ip:198.51.100.4"  # the verified tenant, never the client's claim
        assert headers["x-correlation-id"] == "abc-1"
        assert "ratelimit-limit" in headers

    h = run(scenario)
    assert h.records[0].decision == "forwarded"


def test_paths_no_route_serves_go_to_django() -> None:
    async def scenario(h: Harness) -> None:
        assert (await h.request("GET", "/api/v1/routes"))[0] == 299

    run(scenario)


def test_rejections_are_json_with_the_right_status() -> None:
    async def scenario(h: Harness) -> None:
        unauthenticated = await h.request("GET", "/proxy/x")
        traversal = await h.request("GET", "/pub/../admin/")
        wrong_method = await h.request("POST", "/ro/x")
        huge = await h.request("GET", "/pub/x", {"traceparent": "0" * 9000})
        assert (huge[0], json.loads(huge[2])["error"]["code"]) == (431, "headers_too_large")
        assert (unauthenticated[0], json.loads(unauthenticated[2])["error"]["code"]) == (401, "not_authenticated")
        assert (traversal[0], json.loads(traversal[2])["error"]["code"]) == (400, "unsafe_path")
        assert (wrong_method[0], wrong_method[1]["allow"]) == (405, "GET")
        for status, headers, _ in (unauthenticated, traversal, wrong_method, huge):
            # Sentinel's own answer: the security headers Django's are sent with (not sniffed, not framed)
            assert {name: headers[name.decode()] for name, _ in OWN_ANSWER_HEADERS} == {
                name: value.decode() for name, value in OWN_ANSWER_HEADERS
            }, status

    h = run(scenario)
    assert [r.decision for r in h.records] == ["auth_failed", "rejected", "rejected", "rejected"]


def test_the_record_keeps_the_path_as_the_client_sent_it() -> None:
    """The request log is what an operator searches after an attack: an encoded separator must be
    recorded as sent, not as the harmless-looking path the server decoded it to."""

    refused = {  # as sent → as the server decoded it
        "/pub/a%2fb": "/pub/a/b",
        "/pub/%2e%2e/admin": "/pub/../admin",
        "/pub/a%5cb": "/pub/a\\b",
        "/pub/%252e%252e/x": "/pub/%2e%2e/x",
        "/pub/a;x=1/b": "/pub/a;x=1/b",
    }

    async def scenario(h: Harness) -> None:
        for sent, decoded in refused.items():
            assert (await h.request("GET", decoded, sent_path=sent))[0] == 400, sent
        assert (await h.request("GET", "/pub/caf\u00e9", sent_path="/pub/caf%C3%A9"))[0] == 200

    h = run(scenario)
    assert [(r.path, r.status, r.reason) for r in h.records] == [
        *((sent, 400, "unsafe_path") for sent in refused),
        ("/pub/caf%C3%A9", 200, ""),
    ]
    assert h.records[0].bytes_out > 50  # the JSON error it was sent


def test_behind_a_trusted_proxy_the_client_is_the_address_it_forwarded() -> None:
    """TRUSTED_PROXY_COUNT=1: limits, the record and the insight engine see the client the load
    balancer (the socket peer, 198.51.100.4) names, not the balancer; a forged entry further left
    is not believed; the upstream gets the chain with the balancer appended."""

    async def scenario(h: Harness) -> None:
        status, _, body = await h.request("GET", "/pub/x", {"x-forwarded-for": "6.6.6.6, 203.0.113.7"})
        assert status == 200
        assert json.loads(body)["headers"]["x-forwarded-for"] == "6.6.6.6, 203.0.113.7, 198.51.100.4"
        assert json.loads(body)["headers"]["x-tenant-id"] == "ip:203.0.113.7"

    h = run(scenario, config=GatewayConfig(trusted_proxy_count=1))
    assert (h.records[0].client_ip, h.records[0].tenant_key) == ("203.0.113.7", "ip:203.0.113.7")


def test_the_local_bucket_refuses_a_burst() -> None:
    async def scenario(h: Harness) -> None:
        statuses = [(await h.request("GET", "/pub/x"))[0] for _ in range(4)]
        limited = await h.request("GET", "/pub/x")
        assert statuses == [200, 200, 429, 429]
        assert int(limited[1]["retry-after"]) >= 1

    run(scenario, config=GatewayConfig(burst_capacity=2, refill_rate=0.01))


def test_the_window_limit_is_scaled_by_tier() -> None:
    async def scenario(h: Harness) -> None:
        anonymous = [(await h.request("GET", "/pub/x"))[0] for _ in range(3)]
        vital = [(await h.request("GET", "/proxy/x", {"authorization": bearer()}))[0] for _ in range(9)]
        assert anonymous == [200, 200, 429]  # economy: half of 4
        assert vital == [200] * 8 + [429]  # vital: twice 4

    run(scenario, config=GatewayConfig(base_rate_limit=4, burst_capacity=100))


def test_economy_is_shed_while_vital_passes_under_pressure() -> None:
    async def scenario(h: Harness) -> None:
        shed = await h.request("GET", "/pub/x")
        vital = await h.request("GET", "/proxy/x", {"authorization": bearer()})
        assert (shed[0], json.loads(shed[2])["error"]["code"], shed[1]["retry-after"]) == (503, "shed", "5")
        assert vital[0] == 200

    run(scenario, config=GatewayConfig(forced_pressure=80))


def test_the_breaker_opens_and_answers_without_the_upstream() -> None:
    breaker = MemoryBreaker(BreakerConfig(failure_threshold=0.5, min_volume=2, cooldown_ms=60_000))

    async def scenario(h: Harness) -> None:
        failures = [(await h.request("GET", "/pub/status/503"))[0] for _ in range(2)]
        status, headers, body = await h.request("GET", "/pub/x")
        assert failures == [503, 503]
        assert (status, json.loads(body)["error"]["code"]) == (503, "breaker_open")
        assert "x-upstream-name" not in headers  # the upstream never saw it
        assert int(headers["retry-after"]) >= 1

    h = run(scenario, breaker=breaker)
    assert [r.decision for r in h.records] == ["upstream_error", "upstream_error", "breaker_open"]


def test_a_tenants_new_limits_apply_to_its_next_request() -> None:
    tight = TenantInfo(uuid=VITAL.uuid, slug="vip", tier="vital", overrides={"BASE_RATE_LIMIT": 1})
    loose = TenantInfo(uuid=VITAL.uuid, slug="vip", tier="vital", overrides={"BASE_RATE_LIMIT": 50})
    statuses: list[int] = []

    async def scenario(h: Harness) -> None:
        # Given a vital tenant limited to 1 request a window (x2 for its tier)
        h.proxy.state.tenants = TenantDirectory([tight])
        for _ in range(3):
            statuses.append((await h.request("GET", "/proxy/x", {"authorization": bearer(tight)}))[0])
        # When an operator raises its limit (the runtime loads a new directory)
        h.proxy.state.tenants = TenantDirectory([loose])
        statuses.append((await h.request("GET", "/proxy/x", {"authorization": bearer(loose)}))[0])
        # and a route of its own gets a limit of its own
        route = h.proxy.state.routes.match("/proxy/x")
        assert route is not None
        h.proxy.state.routes = RouteTable([replace(route, base_rate_limit=1)])
        statuses.append((await h.request("GET", "/proxy/x", {"authorization": bearer(loose)}))[0])

    run(scenario)
    # Then the limits worked out for the first requests were not kept past the change
    assert statuses == [200, 200, 429, 200, 429]

"""The proxy: one raw ASGI app running SPEC 2's lifecycle for every request a route matches.

correlation → route → auth → local bucket → distributed limit → pressure/tier → breaker →
forward → record. Paths no route matches go to the `fallback` app (Django). Every decision,
rejections included, is reported to `on_complete` (the request log and metrics hang there), after
the response is sent, so logging never delays a client.

Plain async Python, no Django: the configuration (`GatewayConfig`), route table and tenant
directory are handed in, and swapped whole by the runtime when they change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

from core.correlation import accept_correlation_id as correlation_id
from core.errors import OWN_ANSWER_HEADERS, error_json
from core.forwarded import forwarded_client
from core.ratelimit_headers import service_unavailable_headers, too_many_requests_headers
from gateway.engine.auth import Authenticator, AuthFailure, Identity, TenantDirectory, TenantInfo
from gateway.engine.breaker import Breaker, BreakerUnavailable, Permit
from gateway.engine.forwarder import Forwarder, ForwardResult
from gateway.engine.gate import RedisGate
from gateway.engine.pressure import PressureGauge, TierAdmission, combine
from gateway.engine.ratelimit import (
    LimiterUnavailable,
    LocalTokenBuckets,
    MemoryWindowLimiter,
    RedisWindowLimiter,
    WindowDecision,
    bucket_limit,
    ratelimit_headers,
)
from gateway.engine.routes import RequestPath, RouteSpec, RouteTable, UnsafePath, parse_path
from gateway.engine.tracing import TraceContext, continue_trace

logger = logging.getLogger("sentinel.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Header = tuple[bytes, bytes]
# What the proxy did with a request (RequestRecord.decision, the metrics' `decision` label).
Decision: TypeAlias = Literal[
    "forwarded", "limited", "shed", "breaker_open", "auth_failed", "upstream_error", "rejected"
]

# Header limits of the proxied requests, as nginx's defaults (large_client_header_buffers 4 8k):
# one header line over 8 KiB, or all of them over 32 KiB, is refused with 431.
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS_TOTAL_BYTES = 32 * 1024
# The credential Sentinel checked is Sentinel's, not the upstream's: it is not forwarded (Kong's
# `hide_credentials`). Upstreams learn the caller from the tenant header instead. On routes with
# auth `none`, or a tenant named by header, the client's headers pass untouched.
CREDENTIAL_HEADERS = {"jwt": frozenset({b"authorization"}), "api_key": frozenset({b"x-api-key"})}
# Where `__call__` leaves the checked path for `_check_request` (an ASGI scope extension key).
_PATH_KEY = "sentinel.path"
# How the distributed limit scales with the caller's tier.
TIER_FACTORS = {"vital": 2.0, "standard": 1.0, "economy": 0.5}
# Retry-After of the limiter-unavailable 503 (fail mode closed): the limiter's Redis client stays
# "down" for 1 s after a failure before it tries again (`gateway_redis_client`'s down_for_s).
LIMITER_DOWN_RETRY_AFTER_S = 1
# Retry-After of the no-upstream 503: a route without targets waits for an operator, and changes
# reach every process within a second, so this is only a polite pace for retries; it is the
# default breaker cooldown (BREAKER_COOLDOWN_MS), the other "this upstream cannot serve" wait.
NO_UPSTREAM_RETRY_AFTER_S = 30
# Limits worked out per (route, tenant key, tier) kept at most (`Proxy._limits_of`).
MAX_CACHED_LIMITS = 10_000


@dataclass(frozen=True)
class GatewayConfig:
    """SENTINEL_GATEWAY's values, as the engine uses them."""

    tenant_header: str = "x-tenant-id"
    burst_capacity: int = 20
    refill_rate: float = 10.0
    window_ms: int = 60_000
    base_rate_limit: int = 100
    request_timeout_ms: int = 30_000
    rate_limit_fail_mode: str = "open"
    forced_pressure: float | None = None  # tests and drills: act as if pressure were this
    # Reverse proxies in front that append to X-Forwarded-For (TRUSTED_PROXY_COUNT): whose
    # address the limits, the request log and the insight engine see (`forwarded_client`).
    trusted_proxy_count: int = 0


class RequestRecord(NamedTuple):
    """One proxied request's outcome, for the request log and the metrics.

    A named tuple rather than a frozen dataclass: one is built per request, and a frozen
    dataclass sets its 24 fields one `object.__setattr__` at a time (~4x the time to build).
    """

    correlation_id: str
    trace_id: str
    route: str | None  # the route's path prefix: unique, unlike its name
    tenant_key: str | None
    tier: str | None
    method: str
    path: str
    status: int
    decision: Decision
    latency_ms: float
    upstream: str | None = None
    upstream_latency_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    client_ip: str = ""
    user_agent: str = ""
    pressure: float = 0.0
    # Why a request was refused, finer than `decision`: burst, window, limiter_unavailable,
    # unsafe_path, headers_too_large, method_not_allowed, shed, breaker_open, no_upstream, auth.
    reason: str = ""
    # The distributed limiter did not answer and the request was decided without it.
    limiter_unavailable: bool = False
    # For the request log: when the request arrived (Unix time, seconds; wall clock, unlike
    # `latency_ms`), the route's id, the caller's principal (user id or key prefix) and tenant
    # uuid (None when anonymous), and the breaker state its outcome moved the upstream to.
    arrived_at: float = 0.0
    route_id: int | None = None
    principal: str = ""
    tenant_uuid: str | None = None
    breaker_transition: str = ""


@dataclass
class ProxyState:
    """What the runtime swaps whole on a configuration change."""

    routes: RouteTable = field(default_factory=lambda: RouteTable([]))
    tenants: TenantDirectory = field(default_factory=TenantDirectory)
    fleet_pressure: list[float] = field(default_factory=list)


class _Limits(NamedTuple):
    """A caller's limits on a route (`Proxy._limits_of`), with the route and tenant they were
    worked out from."""

    route: RouteSpec
    tenant: TenantInfo | None
    capacity: int
    refill: float
    bucket_key: str
    limit: int
    window_ms: int
    window_key: str


class Rejection(Exception):
    """A request refused before forwarding, with the JSON error to send.

    ``headers`` go on the response; a 429 or 503 gets them from ``core.ratelimit_headers`` (every
    one carries ``Retry-After``, a 429 the whole RateLimit set: README, "Rejections").
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        decision: Decision,
        headers: list[Header] | None = None,
        *,
        reason: str = "",
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.decision = status, code, message, decision
        self.headers = headers or []
        self.reason = reason or code


class Proxy:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        fallback: ASGIApp,
        authenticator: Authenticator,
        window_limiter: RedisWindowLimiter | MemoryWindowLimiter,
        breaker: Breaker,
        forwarder: Forwarder,
        gauge: PressureGauge,
        admission: TierAdmission,
        on_complete: Callable[[RequestRecord], None] | None = None,
        gate: RedisGate | None = None,
    ) -> None:
        """`gate`, when given, asks the window and the breaker in one round trip; it must be
        built on `window_limiter` and `breaker` (`gateway.runtime.build_proxy` does)."""
        self.config = config
        self.fallback = fallback
        self.authenticator = authenticator
        self.window_limiter = window_limiter
        self.breaker = breaker
        self.forwarder = forwarder
        self.gauge = gauge
        self.admission = admission
        self.buckets = LocalTokenBuckets()
        self.on_complete = on_complete
        self.gate = gate
        self.state = ProxyState()
        self._limits: dict[tuple[int, str, str], _Limits] = {}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Routes one ASGI request: proxied when a route matches its path, else Django's.

        The path is checked and normalised once (`parse_path`) before anything else, and the
        result is what the route is matched against and what `_check_request` forwards: one path
        for both, so a request routed under one prefix cannot reach the upstream under another.
        A path `parse_path` refuses gets the JSON 400 ``unsafe_path`` whoever would have served
        it; it is recorded under the route its server-decoded path names, when one does.

        Not a coroutine function: it returns the awaitable of whatever serves the request
        (`handle`, or the fallback), so that this layer is not in the request's await chain
        (every resumption of a request passes through each coroutine frame above it; issue 13).
        """
        if scope["type"] != "http":
            return self.fallback(scope, receive, send)
        try:
            path = parse_path((scope.get("raw_path") or b"").decode("latin-1") or scope["path"])
        except UnsafePath as exc:
            route = self.state.routes.match(scope["path"])
            if route is None:
                return _refuse_unsafe_path(send, str(exc))
            return self.handle(route, scope, receive, send)  # refused (and recorded) there
        route = self.state.routes.match(path.decoded)
        if route is None:
            if path.changed:  # Django serves the merged path too
                scope = {**scope, "path": path.decoded, "raw_path": path.raw.encode("latin-1")}
            return self.fallback(scope, receive, send)
        scope[_PATH_KEY] = path
        return self.handle(route, scope, receive, send)

    async def handle(self, route: RouteSpec, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = _header_map(scope)
        correlation = correlation_id(headers.get("x-correlation-id"))
        trace = self._trace_context(headers)
        peer = (scope.get("client") or ("unknown", 0))[0]
        client_ip = (
            forwarded_client(peer, _header_values(scope, b"x-forwarded-for"), self.config.trusted_proxy_count)
            if self.config.trusted_proxy_count
            else peer
        )
        base_headers: list[Header] = [(b"x-correlation-id", correlation.encode())]
        record = _RecordBuilder(scope, correlation, trace.trace_id, route, client_ip, headers)
        self.gauge.started()
        failed = False
        try:
            try:
                upstream_path = self._check_request(route, scope)
                identity = await self._authenticate(route, headers, client_ip)
                record.identity = identity
                target, permit, limit_headers = await self._limit_and_choose(route, identity, record)
            except Rejection as rejection:
                record.error_bytes = await _send_error(
                    send, rejection.status, rejection.code, rejection.message, base_headers + rejection.headers
                )
                record.finish(rejection.status, rejection.decision, rejection.reason)
                return
            extra = [
                (b"x-correlation-id", correlation.encode()),
                (b"traceparent", trace.traceparent.encode()),
                (self.config.tenant_header.encode(), identity.tenant_key.encode()),
            ]
            result = await self._forward(
                scope=scope,
                receive=receive,
                send=send,
                target=target,
                upstream_path=upstream_path,
                timeout_ms=route.timeout_ms or self.config.request_timeout_ms,
                max_body_bytes=route.max_body_bytes,
                client_ip=peer,  # appended to X-Forwarded-For: the hop this proxy received from
                extra_headers=extra,
                response_headers=base_headers + limit_headers,
                hidden_headers=CREDENTIAL_HEADERS.get(identity.kind, frozenset()),
                tenant_uuid=route.tenant_uuid,
            )
            failed = result.counts_as_failure
            record.breaker_transition = await self._record_outcome(target, permit, result)
            record.forwarded(target, result)
        finally:
            self.gauge.finished((time.perf_counter() - started) * 1000, failed=failed)
            if self.on_complete is not None and record.done:
                try:
                    self.on_complete(record.build(started))
                except Exception:  # observing a request must never fail it
                    logger.exception("request observer failed")

    # Seams for the traced proxy (gateway.engine.traced_proxy), which wraps each in a span; the
    # plain proxy pays one method call for each, and no span call at all.
    def _trace_context(self, headers: dict[str, str]) -> TraceContext:
        return continue_trace(headers.get("traceparent"))

    # The two below return the awaitable of the call they stand for rather than awaiting it: a
    # seam is then no coroutine frame of its own in the request's await chain.
    def _window_check(self, key: str, limit: int, window_ms: int) -> Awaitable[WindowDecision]:
        return self.window_limiter.check(key, limit, window_ms)

    def _forward(self, **request: Any) -> Awaitable[ForwardResult]:
        """`Forwarder.forward` with these arguments; `extra_headers` carries the `traceparent`."""
        return self.forwarder.forward(**request)

    def _check_request(self, route: RouteSpec, scope: Scope) -> str:
        sizes = [len(name) + len(value) for name, value in scope.get("headers", [])]
        if sizes and (max(sizes) > MAX_HEADER_BYTES or sum(sizes) > MAX_HEADERS_TOTAL_BYTES):
            raise Rejection(431, "headers_too_large", "Request headers are too large.", "rejected")
        path: RequestPath | None = scope.get(_PATH_KEY)
        if path is None:  # not through __call__, or a path it refused
            try:
                path = parse_path((scope.get("raw_path") or b"").decode("latin-1") or scope["path"])
            except UnsafePath as exc:
                raise Rejection(400, "unsafe_path", str(exc), "rejected") from None
        if not route.allows_method(scope["method"]):
            allow = ", ".join(sorted(route.methods)).encode()
            raise Rejection(
                405, "method_not_allowed", "Method not allowed on this route.", "rejected", [(b"allow", allow)]
            )
        return route.upstream_path(path.raw)

    async def _authenticate(self, route: RouteSpec, headers: dict[str, str], client_ip: str) -> Identity:
        identity = await self.authenticator.authenticate(route, headers, client_ip, self.state.tenants)
        if isinstance(identity, AuthFailure):
            extra = [(b"www-authenticate", b'Bearer realm="sentinel"')] if identity.status == 401 else []
            raise Rejection(identity.status, identity.code, identity.message, "auth_failed", extra)
        return identity

    def _setting(self, route: RouteSpec, identity: Identity, name: str) -> Any:
        """Route override, then tenant override, then the setting."""
        value = getattr(route, name.lower())
        if value is None and identity.tenant is not None:
            value = identity.tenant.overrides.get(name)
        return getattr(self.config, name.lower()) if value is None else value

    async def _limit_and_choose(
        self, route: RouteSpec, identity: Identity, record: _RecordBuilder
    ) -> tuple[str, Permit | None, list[Header]]:
        """Steps 4 to 8: the local bucket, the distributed window, pressure and tier, the breaker.
        Returns the target, its permit (None when the breaker's store did not answer) and the
        rate-limit headers of the response; raises `Rejection`.

        The pressure step is decided before the window is asked, in process, so that the window
        and the first target's breaker can be asked in one round trip (`_window_and_permit`); the
        refusals still come in SPEC 2's order: burst, window, shed, breaker.
        """
        limits = self._limits_of(route, identity)
        self._take_burst(limits)
        pressure = record.pressure = self.pressure()
        admitted = self.admission.admit(identity.tier, pressure)
        turn = route.targets_in_turn()
        first = turn[0] if turn and admitted else None
        permit: Permit | None = None
        try:
            decision, permit = await self._window_and_permit(limits.window_key, limits.limit, limits.window_ms, first)
        except LimiterUnavailable as exc:
            record.limiter_unavailable = True
            limit_headers = self._limiter_down(exc)
        else:
            limit_headers = self._window_outcome(decision)
        if not admitted:
            headers = service_unavailable_headers(retry_after_s=self.admission.retry_after_s())
            raise Rejection(503, "shed", f"Shedding {identity.tier} traffic under load.", "shed", headers)
        target, permit = await self._choose_target(route, turn, permit)
        return target, permit, limit_headers

    def _limits_of(self, route: RouteSpec, identity: Identity) -> _Limits:
        """The limits of `identity` on `route`, worked out once per route, tenant and tier and
        kept while the route table and the tenant directory hold the same route and tenant
        (the runtime replaces both objects when either changes)."""
        cache_key = (route.id, identity.tenant_key, identity.tier)
        limits = self._limits.get(cache_key)
        if limits is not None and limits.route is route and limits.tenant is identity.tenant:
            return limits
        # One bucket per tenant (SPEC 2.4); a route with burst limits of its own gets its own
        # bucket, as a per-route plugin would, instead of draining the tenant's other routes.
        own = route.burst_capacity is not None or route.refill_rate is not None
        base = self._setting(route, identity, "BASE_RATE_LIMIT")
        limits = _Limits(
            route=route,
            tenant=identity.tenant,
            capacity=int(self._setting(route, identity, "BURST_CAPACITY")),
            refill=float(self._setting(route, identity, "REFILL_RATE")),
            bucket_key=f"{identity.tenant_key}:{route.id}" if own else identity.tenant_key,
            limit=max(1, int(base * TIER_FACTORS.get(identity.tier, 1.0))),
            window_ms=int(self._setting(route, identity, "WINDOW_MS")),
            window_key=f"{identity.tenant_key}:{route.id}",
        )
        if len(self._limits) >= MAX_CACHED_LIMITS:  # anonymous callers are one key per address
            self._limits.clear()
        self._limits[cache_key] = limits
        return limits

    def _take_burst(self, limits: _Limits) -> None:
        bucket = self.buckets.take(limits.bucket_key, limits.capacity, limits.refill)
        if not bucket.allowed:
            policy = bucket_limit(bucket, limits.capacity, limits.refill)
            headers = too_many_requests_headers(policy, retry_after_s=bucket.retry_after_s)
            raise Rejection(429, "rate_limited", "Too many requests (burst).", "limited", headers, reason="burst")

    async def _window_and_permit(
        self, key: str, limit: int, window_ms: int, target: str | None
    ) -> tuple[WindowDecision, Permit | None]:
        """Step 5 for `key` and, when the window admits and `target` is given, step 8's permit for
        `target`: in one Redis round trip through the gate when there is one, else one call
        after the other. Raises `LimiterUnavailable` (then no permit was asked for)."""
        if self.gate is not None:
            gated = await self.gate.check(key, limit, window_ms, target)
            return gated.window, gated.permit
        decision = await self._window_check(key, limit, window_ms)
        if not decision.allowed or target is None:
            return decision, None
        try:
            return decision, await self.breaker.acquire(target)
        except BreakerUnavailable:
            return decision, None  # asked again, and reported, by _choose_target

    def _limiter_down(self, exc: LimiterUnavailable) -> list[Header]:
        logger.warning(
            "distributed limiter unavailable (%s); failing %s", exc.__cause__ or exc, self.config.rate_limit_fail_mode
        )
        if self.config.rate_limit_fail_mode == "closed":
            headers = service_unavailable_headers(retry_after_s=LIMITER_DOWN_RETRY_AFTER_S)
            raise Rejection(503, "limiter_unavailable", "Rate limiting is unavailable.", "limited", headers)
        return []  # fail open: the local bucket still holds each process back

    @staticmethod
    def _window_outcome(decision: WindowDecision) -> list[Header]:
        headers = ratelimit_headers(decision)
        if not decision.allowed:
            raise Rejection(
                429, "rate_limited", "Rate limit exceeded for this window.", "limited", headers, reason="window"
            )
        return headers

    def pressure(self) -> float:
        """The pressure (0-100) requests are shed on (SPEC 2.6): `GATEWAY_FORCED_PRESSURE` when
        set, else this process's gauge combined with the fleet's reports (`pressure.combine`)."""
        forced = self.config.forced_pressure
        return combine(self.gauge.score(), self.state.fleet_pressure) if forced is None else forced

    async def _choose_target(
        self, route: RouteSpec, turn: list[str], first: Permit | None = None
    ) -> tuple[str, Permit | None]:
        """The next target in turn whose breaker admits the request (SPEC 2.9: skip open ones).
        `turn` is `route.targets_in_turn()`; `first`, the permit already given for its first
        target (`_window_and_permit`), or None to ask for it here."""
        if not turn:
            headers = service_unavailable_headers(retry_after_s=NO_UPSTREAM_RETRY_AFTER_S)
            raise Rejection(503, "no_upstream", "This route has no targets.", "upstream_error", headers)
        shortest_wait = None
        for target in turn:
            if first is not None:
                permit, first = first, None
            else:
                try:
                    permit = await self.breaker.acquire(target)
                except BreakerUnavailable:
                    logger.warning("breaker state unavailable for %s; letting the request through", target)
                    return target, None
            if permit.allowed:
                return target, permit
            wait = permit.retry_after_ms
            shortest_wait = wait if shortest_wait is None else min(shortest_wait, wait)
        # The soonest any target's cooldown ends: then one of them lets a probe through.
        headers = service_unavailable_headers(retry_after_s=(shortest_wait or 1000) / 1000)
        raise Rejection(503, "breaker_open", "The upstream is failing; its circuit is open.", "breaker_open", headers)

    async def _record_outcome(self, target: str, permit: Permit | None, result: ForwardResult) -> str:
        """Reports the outcome to the breaker; returns the state it moved to, "" when none."""
        if permit is None or result.outcome in ("client_disconnect", "body_too_large", "egress_denied"):
            return ""  # neither says anything about the upstream's health
        try:
            transition = await self.breaker.record(target, permit, success=not result.counts_as_failure)
        except BreakerUnavailable:
            return ""
        if transition is None:
            return ""
        logger.warning("breaker %s: %s -> %s", target, transition.from_state, transition.to_state)
        return transition.to_state


class _RecordBuilder:
    def __init__(
        self, scope: Scope, correlation: str, trace_id: str, route: RouteSpec, client_ip: str, headers: dict[str, str]
    ) -> None:
        self.scope, self.correlation, self.trace_id, self.route = scope, correlation, trace_id, route
        self.arrived_at = time.time()
        self.client_ip = client_ip
        self.user_agent = headers.get("user-agent", "")[:256]
        self.identity: Identity | None = None
        self.pressure = 0.0
        self.status = 0
        self.decision: Decision | None = None
        self.upstream: str | None = None
        self.result: ForwardResult | None = None
        self.reason = ""
        self.error_bytes = 0  # the JSON error's body, when Sentinel answered instead of the upstream
        self.limiter_unavailable = False
        self.breaker_transition = ""

    @property
    def done(self) -> bool:
        return self.decision is not None

    def finish(self, status: int, decision: Decision, reason: str = "") -> None:
        self.status, self.decision, self.reason = status, decision, reason

    def forwarded(self, target: str, result: ForwardResult) -> None:
        self.upstream, self.result = target, result
        if result.outcome == "egress_denied":  # Sentinel's own refusal: nothing reached the upstream
            self.finish(result.status, "rejected", "egress_denied")
            return
        # The forwarder's outcome names what went wrong (`connect_error`, `timeout`, `upstream_5xx`,
        # `client_disconnect`, ...); a plain answer has no reason.
        self.finish(
            result.status,
            "upstream_error" if result.counts_as_failure or result.status >= 500 else "forwarded",
            "" if result.outcome == "ok" else result.outcome,
        )

    def build(self, started: float) -> RequestRecord:
        assert self.decision is not None, "build() before finish()"
        result = self.result
        identity = self.identity
        tenant = identity.tenant if identity else None
        return RequestRecord(
            correlation_id=self.correlation,
            trace_id=self.trace_id,
            route=self.route.path_prefix,
            tenant_key=identity.tenant_key if identity else None,
            tier=identity.tier if identity else None,
            method=self.scope["method"],
            # As the client sent it (its escapes kept), as an access log's request line: an encoded
            # separator the proxy refused must not be recorded as the path it decodes to.
            path=((self.scope.get("raw_path") or b"").decode("latin-1") or self.scope["path"])[:2000],
            status=self.status,
            decision=self.decision,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            upstream=self.upstream,
            upstream_latency_ms=result.upstream_latency_ms if result else None,
            bytes_in=result.bytes_in if result else 0,
            bytes_out=result.bytes_out if result else self.error_bytes,
            client_ip=self.client_ip,
            user_agent=self.user_agent,
            pressure=self.pressure,
            reason=self.reason,
            limiter_unavailable=self.limiter_unavailable,
            arrived_at=self.arrived_at,
            route_id=self.route.id,
            principal=(identity.principal or "") if identity else "",
            tenant_uuid=tenant.uuid if tenant else None,
            breaker_transition=self.breaker_transition,
        )


def _header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of request header `name` (lower-case), in order."""
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _header_map(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; a repeated header keeps its first value."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


async def _refuse_unsafe_path(send: Send, message: str) -> None:
    await _send_error(send, 400, "unsafe_path", message, [])


async def _send_error(send: Send, status: int, code: str, message: str, headers: list[Header]) -> int:
    """Sends the JSON error of SPEC 7 with ``headers`` (a Rejection's, after the correlation id);
    returns the body's length in bytes (the record's ``bytes_out``)."""
    body = error_json(code, message)
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *OWN_ANSWER_HEADERS, *headers]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
    return len(body)

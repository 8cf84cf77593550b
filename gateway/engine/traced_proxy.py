"""The proxy with spans (SPEC 3, "Tracing"): `proxy_request` and its children `token_bucket_check`,
`distributed_limiter_check`, `circuit_breaker` and `upstream`.

`TracedProxy` is `Proxy` with its steps wrapped in spans of the `Tracer` the site hands in;
`gateway.runtime.build_proxy` builds it only when tracing is on, so with tracing off the plain
`Proxy` runs and no span code is reached at all.

Ids: `proxy_request` continues the client's `traceparent` (its trace id, the client's span as its
parent), or starts a trace; its ids replace the ones `continue_trace` made, so the request log's
`trace_id`, the exported spans and the upstream's `traceparent` name one trace. The upstream's
`traceparent` names the `upstream` span as its parent, as an instrumented HTTP client would.

Sampling: a `proxy_request` span the sampler dropped (not `recording`) is not kept as the request's
span, so no child span is started and no attribute computed for that request: its only costs are
the sampler's decision and the ids its `context` carries on to the request log and the upstream.

Refusals and failures are marked on the span that decided them (status ERROR with the reason) and
on `proxy_request`, whose `sentinel.decision` and `sentinel.reason` attributes say which: a 429,
401 or 503 is what an operator looks for in a trace search.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any

from gateway.engine.breaker import Permit
from gateway.engine.forwarder import ForwardResult
from gateway.engine.proxy import Header, Proxy, Receive, RequestRecord, Scope, Send
from gateway.engine.ratelimit import BucketDecision, LimiterUnavailable, LocalTokenBuckets, WindowDecision
from gateway.engine.routes import RouteSpec
from gateway.engine.tracing import AttributeValue, Span, TraceContext, Tracer, continue_trace

RecordSink = Callable[[RequestRecord], None]
_NO_ATTRIBUTES: Mapping[str, AttributeValue] = {}

__all__ = ["TracedProxy"]

# The `proxy_request` span of the request the running task serves (each ASGI request runs in a
# task of its own, so one request never sees another's); None when it is not sampled.
_request_span: ContextVar[Span | None] = ContextVar("sentinel_proxy_request_span", default=None)


class TracedProxy(Proxy):
    """`Proxy` exporting a span for the request and for each step SPEC 3 names."""

    def __init__(self, *, tracer: Tracer, **parts: Any) -> None:
        on_complete: RecordSink | None = parts.pop("on_complete", None)
        super().__init__(on_complete=_finishing_span(on_complete), **parts)
        self.tracer = tracer
        self.buckets = _TracedBuckets(tracer)

    async def handle(self, route: RouteSpec, scope: Scope, receive: Receive, send: Send) -> None:
        token = _request_span.set(None)
        try:
            await super().handle(route, scope, receive, send)
        except BaseException as exc:  # a cancelled or crashed request still ends its span
            span = _request_span.get()
            if span is not None:
                span.fail(type(exc).__name__)
            raise
        finally:
            span = _request_span.get()
            if span is not None:
                span.end()
            _request_span.reset(token)

    def _trace_context(self, headers: dict[str, str]) -> TraceContext:
        span = self.tracer.start_request(continue_trace(headers.get("traceparent")), _NO_ATTRIBUTES)
        if span.recording:
            span.set_attributes({"user_agent.original": headers.get("user-agent", "")[:256]})
            _request_span.set(span)
        return span.context

    # Each step below returns, for a request not sampled, the plain proxy's awaitable as it is (no
    # coroutine frame of its own in the request's await chain), and for a sampled one a coroutine
    # that runs the step in its span.

    def _window_check(self, key: str, limit: int, window_ms: int) -> Awaitable[WindowDecision]:
        span = self._child("distributed_limiter_check")
        if span is None:
            return super()._window_check(key, limit, window_ms)
        return self._window_check_in(span, key, limit, window_ms)

    async def _window_check_in(self, span: Span, key: str, limit: int, window_ms: int) -> WindowDecision:
        try:
            decision = await super()._window_check(key, limit, window_ms)
            span.set_attributes(
                {"sentinel.ratelimit.limit": decision.limit, "sentinel.ratelimit.remaining": decision.remaining}
            )
            if not decision.allowed:
                span.fail("window limit reached")
            return decision
        except LimiterUnavailable as exc:
            span.fail(f"limiter unavailable: {exc.__cause__ or exc}")
            raise
        finally:
            span.end()

    def _window_and_permit(
        self, key: str, limit: int, window_ms: int, target: str | None
    ) -> Coroutine[Any, Any, tuple[WindowDecision, Permit | None]]:
        if _request_span.get() is None:  # not sampled: the one round trip, no span
            return super()._window_and_permit(key, limit, window_ms, target)
        # Sampled: each step in a span of its own, so the breaker is asked by _choose_target.
        return self._window_alone(key, limit, window_ms)

    async def _window_alone(self, key: str, limit: int, window_ms: int) -> tuple[WindowDecision, Permit | None]:
        return await self._window_check(key, limit, window_ms), None

    def _choose_target(
        self, route: RouteSpec, turn: list[str], first: Permit | None = None
    ) -> Coroutine[Any, Any, tuple[str, Permit | None]]:
        span = self._child("circuit_breaker")
        if span is None:
            return super()._choose_target(route, turn, first)
        return self._choose_target_in(span, route, turn, first)

    async def _choose_target_in(
        self, span: Span, route: RouteSpec, turn: list[str], first: Permit | None
    ) -> tuple[str, Permit | None]:
        try:
            target, permit = await super()._choose_target(route, turn, first)
            state = permit.state if permit else "unknown"  # no permit: the breaker's store did not answer
            span.set_attributes({"sentinel.upstream": target, "sentinel.breaker.state": state})
            return target, permit
        except Exception as exc:  # the Rejection: every breaker open, or no target
            span.fail(str(exc))
            raise
        finally:
            span.end()

    def _forward(self, **request: Any) -> Awaitable[ForwardResult]:
        span = self._child("upstream", client=True)
        if span is None:  # the upstream's traceparent names proxy_request, unsampled
            return super()._forward(**request)
        return self._forward_in(span, request)

    async def _forward_in(self, span: Span, request: dict[str, Any]) -> ForwardResult:
        traceparent = span.context.traceparent.encode()
        headers: list[Header] = request["extra_headers"]
        request["extra_headers"] = [(n, traceparent if n == b"traceparent" else v) for n, v in headers]
        try:
            result = await super()._forward(**request)
            span.set_attributes(_upstream_attributes(request, result))
            if result.counts_as_failure or result.status >= 500:
                span.fail(result.outcome)
            return result
        finally:
            span.end()

    def _child(self, name: str, *, client: bool = False) -> Span | None:
        """A step's span, or None when the request is not sampled."""
        parent = _request_span.get()
        return None if parent is None else self.tracer.start_child(parent, name, client=client)


class _TracedBuckets(LocalTokenBuckets):
    """The local token buckets, each take in a `token_bucket_check` span."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def take(self, key: str, capacity: int, refill_per_second: float, now: float | None = None) -> BucketDecision:
        parent = _request_span.get()
        if parent is None:  # not sampled (or a take outside a request): no span
            return super().take(key, capacity, refill_per_second, now)
        span = self.tracer.start_child(parent, "token_bucket_check")
        try:
            decision = super().take(key, capacity, refill_per_second, now)
            span.set_attributes(
                {"sentinel.ratelimit.capacity": capacity, "sentinel.ratelimit.remaining": decision.remaining}
            )
            if not decision.allowed:
                span.fail("burst limit reached")
            return decision
        finally:
            span.end()


def _upstream_attributes(request: Mapping[str, Any], result: ForwardResult) -> dict[str, AttributeValue]:
    # The path without the query: a query string may carry secrets (OpenTelemetry's url.full advice).
    return {
        "http.request.method": request["scope"]["method"],
        "url.full": f"{request['target'].rstrip('/')}{request['upstream_path']}",
        "http.response.status_code": result.status,
        "sentinel.upstream.outcome": result.outcome,
        "sentinel.upstream.latency_ms": result.upstream_latency_ms,
    }


def _finishing_span(observer: RecordSink | None) -> Callable[[RequestRecord], None]:
    """`on_complete` that first writes the record's outcome on the request's span."""

    def observe(record: RequestRecord) -> None:
        span = _request_span.get()
        if span is not None:
            span.set_attributes(_request_attributes(record))
            if record.decision != "forwarded":
                span.fail(f"{record.decision}: {record.reason}" if record.reason else record.decision)
        if observer is not None:
            observer(record)

    return observe


def _request_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
    """The request's attributes: OpenTelemetry's HTTP server names, Sentinel's own under `sentinel.`."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": record.method,
        "http.route": record.route or "",
        "url.path": record.path,
        "http.response.status_code": record.status,
        "client.address": record.client_ip,
        "sentinel.decision": record.decision,
        "sentinel.correlation_id": record.correlation_id,
    }
    if record.tenant_key is not None:
        attributes["sentinel.tenant"] = record.tenant_key
    if record.reason:
        attributes["sentinel.reason"] = record.reason
    return attributes

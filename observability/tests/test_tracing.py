"""The traced proxy in-process: the OpenTelemetry tracer exporting to a real OTLP/HTTP receiver, the
engine's harness in front of a real upstream; and the tracing settings."""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections.abc import Iterator, Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gateway.engine.traced_proxy import TracedProxy
from gateway.engine.tracing import AttributeValue, Span, TraceContext
from gateway.tests.test_engine_proxy import Harness, run
from observability.tracing import (
    DEFAULT_SAMPLER,
    DEFAULT_SAMPLER_RATIO,
    OtelSpan,
    OtelTracer,
    Presampler,
    PresetTraceIds,
    default_sampler,
    otlp_traces_url,
    route_template,
    tracer_provider,
)
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.processes import child_env, python_command

UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


class CountingTracer(OtelTracer):
    """The OpenTelemetry tracer, counting the spans the proxy asks it for."""

    def __init__(self, tracer: trace.Tracer, presampler: Presampler | None = None) -> None:
        super().__init__(tracer, presampler)
        self.started: list[str] = []
        self.sdk: CountingSdkTracer | None = None

    def start_request(self, incoming: TraceContext, attributes: Mapping[str, AttributeValue]) -> OtelSpan:
        self.started.append("proxy_request")
        return super().start_request(incoming, attributes)

    def start_child(self, parent: Span, name: str, *, client: bool = False) -> OtelSpan:
        self.started.append(name)
        return super().start_child(parent, name, client=client)


class CountingSdkTracer:
    """The SDK's tracer, counting the spans it is asked to start."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.asked = 0

    def start_span(self, *args: object, **kwargs: object) -> trace.Span:
        self.asked += 1
        return self.tracer.start_span(*args, **kwargs)  # type: ignore[arg-type]


def traced_run(
    receiver: OtlpReceiver,
    headers: dict[str, str],
    sampler: Sampler | None = None,
    presample_ratio: float | None = None,
) -> tuple[Harness, dict[str, str], CountingTracer]:
    """One GET /pub/x through a TracedProxy; returns the harness (its records), the headers the
    upstream received and the tracer. The provider is shut down (its spans sent) before this returns.
    With `presample_ratio`, the tracer is `tracing_setup`'s with the default sampler at that ratio:
    it decides before asking the SDK, whose ids come from a `PresetTraceIds`."""
    ids = PresetTraceIds() if presample_ratio is not None else None
    if presample_ratio is not None:
        sampler = ParentBased(TraceIdRatioBased(presample_ratio))
    provider = tracer_provider(role="test", url=otlp_traces_url(receiver.endpoint), sampler=sampler, id_generator=ids)
    presampler = Presampler(presample_ratio, ids) if presample_ratio is not None and ids is not None else None
    sdk = CountingSdkTracer(provider.get_tracer("test"))
    tracer = CountingTracer(sdk, presampler)  # type: ignore[arg-type]
    tracer.sdk = sdk
    echoed: dict[str, str] = {}

    async def scenario(h: Harness) -> None:
        proxy = h.proxy
        h.proxy = TracedProxy(
            tracer=tracer,
            config=proxy.config, fallback=proxy.fallback, authenticator=proxy.authenticator,
            window_limiter=proxy.window_limiter, breaker=proxy.breaker, forwarder=proxy.forwarder,
            gauge=proxy.gauge, admission=proxy.admission, on_complete=h.records.append,
        )  # fmt: skip
        h.proxy.state = proxy.state
        status, _, body = await h.request("GET", "/pub/x", headers)
        assert status == 200
        echoed.update(json.loads(body)["headers"])

    harness = run(scenario)
    provider.shutdown()
    return harness, echoed, tracer


def test_the_request_log_the_upstream_and_the_spans_name_one_trace(receiver: OtlpReceiver) -> None:
    harness, upstream_headers, _ = traced_run(receiver, {})

    request = receiver.spans("proxy_request")[0]
    upstream = receiver.spans("upstream")[0]
    assert harness.records[0].trace_id == request.trace_id
    assert upstream_headers["traceparent"] == f"00-{request.trace_id}-{upstream.span_id}-01"
    assert {s.name for s in receiver.spans() if s.parent_span_id == request.span_id} == {
        "token_bucket_check",
        "distributed_limiter_check",
        "circuit_breaker",
        "upstream",
    }
    assert request.resource["sentinel.role"] == "test"


def test_an_unsampled_trace_is_continued_but_not_exported(receiver: OtlpReceiver) -> None:
    harness, upstream_headers, tracer = traced_run(receiver, {"traceparent": UNSAMPLED})

    trace_id = UNSAMPLED.split("-")[1]
    assert harness.records[0].trace_id == trace_id
    assert upstream_headers["traceparent"].startswith(f"00-{trace_id}-")
    assert upstream_headers["traceparent"].endswith("-00")  # the client's decision travels on
    assert receiver.spans() == []
    assert tracer.started == ["proxy_request"]  # a no-op span, and no step span built for it


def test_a_request_the_sampler_drops_builds_no_step_span_and_a_sampled_parent_is_kept(
    receiver: OtlpReceiver,
) -> None:
    never = ParentBased(TraceIdRatioBased(0.0))

    dropped = traced_run(receiver, {}, never)
    kept = traced_run(receiver, {"traceparent": SAMPLED}, never)

    assert dropped[1]["traceparent"].endswith("-00")
    assert dropped[2].started == ["proxy_request"]
    assert kept[2].started == ["proxy_request", "token_bucket_check", "distributed_limiter_check",
                               "circuit_breaker", "upstream"]  # fmt: skip
    assert {s.trace_id for s in receiver.spans()} == {SAMPLED.split("-")[1]}
    assert len(receiver.spans()) == 5
    assert receiver.spans("proxy_request")[0].attributes["user_agent.original"] == ""


def test_the_default_sampler_keeps_one_new_trace_in_a_hundred_and_follows_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    sampler = default_sampler()
    assert sampler is not None
    # TraceIdRatioBased keeps a trace when its id's low 64 bits are under ratio * 2**64.
    bound = round(DEFAULT_SAMPLER_RATIO * 2**64)
    under, over = (7 << 64) | (bound - 1), (7 << 64) | bound

    def sampled(trace_id: int, parent_flags: int | None = None) -> bool:
        parent = None
        if parent_flags is not None:
            remote = SpanContext(trace_id, 0xB7AD6B7169203331, is_remote=True, trace_flags=TraceFlags(parent_flags))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        return sampler.should_sample(parent, trace_id, "proxy_request").decision.is_sampled()

    assert (DEFAULT_SAMPLER, DEFAULT_SAMPLER_RATIO) == ("parentbased_traceidratio", 0.01)
    assert (sampled(under), sampled(over)) == (True, False)  # a new trace: its id decides
    assert (sampled(over, 0x01), sampled(under, 0x00)) == (True, False)  # a client's: its flag decides


def test_the_operators_sampler_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in default_sampler().get_description()  # type: ignore[union-attr]

    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "2")
    with pytest.raises(ValueError, match="not a ratio"):
        default_sampler()

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # the SDK reads it and its ARG itself
    assert default_sampler() is None


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://jaeger:4318", "http://jaeger:4318/v1/traces"),
        ("http://jaeger:4318/", "http://jaeger:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_the_traces_url_is_the_endpoint_under_v1_traces(endpoint: str, url: str) -> None:
    assert otlp_traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", [None, "jaeger:4318"])
def test_tracing_on_without_a_usable_endpoint_stops_the_start(endpoint: str | None) -> None:
    env = child_env(ENABLE_TRACING="true", OTLP_ENDPOINT=endpoint)

    result = subprocess.run(python_command("manage.py", "check"), env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "ENABLE_TRACING is true but OTLP_ENDPOINT" in result.stderr


@pytest.mark.parametrize(
    ("pattern", "template"),
    [
        ("^api/v1/routes/?$", "/api/v1/routes"),
        ("^api/v1/routes/(?P<pk>[^/.]+)/?$", "/api/v1/routes/{pk}"),
        ("^api/v1/request-logs/(?P<pk>[0-9]{1,18})/?$", "/api/v1/request-logs/{pk}"),
        ("^api/v1/incidents/(?P<pk>[^/.]+)/acknowledge/?$", "/api/v1/incidents/{pk}/acknowledge"),
        ("dashboard/", "/dashboard/"),
        ("ai/insight", "/ai/insight"),
        ("admin/<path:object_id>/", "/admin/{object_id}/"),
        ("", "/"),
    ],
)
def test_django_spans_are_named_by_the_route_template(pattern: str, template: str) -> None:
    assert route_template(pattern) == template


# --- The default sampler's decision, read before the SDK is asked ----------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.5, 1.0])
def test_the_presampler_decides_as_the_sdk_s_default_sampler_would(ratio: float) -> None:
    sampler = ParentBased(TraceIdRatioBased(ratio))
    presampler = Presampler(ratio, PresetTraceIds())
    bound = TraceIdRatioBased.get_bound_for_rate(ratio)
    rng = random.Random(13)
    lows = [rng.getrandbits(64) for _ in range(2_000)] + [max(0, bound - 1), bound, bound + 1, 0, 2**64 - 1]
    for low in lows:
        trace_id = (rng.getrandbits(64) << 64) | low
        new = TraceContext(f"{trace_id:032x}", "b7ad6b7169203331", None, "01")
        expected = sampler.should_sample(None, trace_id, "proxy_request").decision.is_sampled()
        assert presampler.samples(new) == expected, hex(trace_id)
    for flags in range(256):  # a client's traceparent: its sampled bit decides, whatever else is set
        remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(flags))
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
        expected = sampler.should_sample(parent, remote.trace_id, "proxy_request").decision.is_sampled()
        continued = TraceContext(
            "0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7", "b7ad6b7169203331", f"{flags:02x}"
        )
        assert presampler.samples(continued) == expected, flags


def test_a_new_trace_the_presampler_keeps_is_exported_under_the_id_the_request_log_has(
    receiver: OtlpReceiver,
) -> None:
    harness, upstream_headers, _ = traced_run(receiver, {}, presample_ratio=1.0)

    request = receiver.spans("proxy_request")[0]
    assert harness.records[0].trace_id == request.trace_id  # the preset id, not one the SDK drew
    assert upstream_headers["traceparent"].startswith(f"00-{request.trace_id}-")
    assert upstream_headers["traceparent"].endswith("-01")
    assert len(receiver.spans()) == 5


@pytest.mark.parametrize("headers", [{}, {"traceparent": UNSAMPLED}], ids=["new trace", "unsampled parent"])
def test_a_request_the_presampler_drops_never_reaches_the_sdk(receiver: OtlpReceiver, headers: dict[str, str]) -> None:
    harness, upstream_headers, tracer = traced_run(receiver, headers, presample_ratio=0.0)

    trace_id = harness.records[0].trace_id
    assert upstream_headers["traceparent"].startswith(f"00-{trace_id}-")
    assert upstream_headers["traceparent"].endswith("-00")
    assert tracer.sdk is not None and tracer.sdk.asked == 0
    assert tracer.started == ["proxy_request"]
    assert receiver.spans() == []
    if headers:
        assert trace_id == UNSAMPLED.split("-")[1]  # the client's trace goes on


def test_a_sampled_parent_is_kept_whatever_the_presampler_s_ratio(receiver: OtlpReceiver) -> None:
    traced_run(receiver, {"traceparent": SAMPLED}, presample_ratio=0.0)

    assert {s.trace_id for s in receiver.spans()} == {SAMPLED.split("-")[1]}
    assert len(receiver.spans()) == 5


def test_a_preset_trace_id_is_used_once_and_by_its_own_thread_only() -> None:
    ids = PresetTraceIds()
    ids.preset(0x1234)
    seen_elsewhere: list[int] = []
    other = threading.Thread(target=lambda: seen_elsewhere.append(ids.generate_trace_id()))
    other.start()
    other.join()

    assert seen_elsewhere[0] != 0x1234
    assert ids.generate_trace_id() == 0x1234
    assert ids.generate_trace_id() not in (0x1234, 0)
    assert ids.generate_span_id() != 0


def test_the_sdk_samples_a_new_trace_the_presampler_keeps_under_the_same_id(receiver: OtlpReceiver) -> None:
    # At 1 %, the SDK would keep 1 in 100 of these if it drew ids of its own: the preset id is what
    # makes its decision the presampler's.
    ids = PresetTraceIds()
    provider = tracer_provider(
        role="test", url=otlp_traces_url(receiver.endpoint), sampler=ParentBased(TraceIdRatioBased(0.01)),
        id_generator=ids,
    )  # fmt: skip
    tracer = OtelTracer(provider.get_tracer("test"), Presampler(0.01, ids))
    bound = TraceIdRatioBased.get_bound_for_rate(0.01)
    for n in range(5):
        trace_id = f"{(n + 1) << 64 | (bound - 1 - n):032x}"
        span = tracer.start_request(TraceContext(trace_id, "b7ad6b7169203331", None, "01"), {})
        assert span.recording
        assert span.context.trace_id == trace_id
        span.end()
    provider.shutdown()

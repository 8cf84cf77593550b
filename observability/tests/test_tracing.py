"""The traced proxy in-process: the OpenTelemetry tracer exporting to a real OTLP/HTTP receiver, the
engine's harness in front of a real upstream; and the tracing settings."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from gateway.engine.traced_proxy import TracedProxy
from gateway.tests.test_engine_proxy import Harness, run
from observability.tracing import OtelTracer, otlp_traces_url, tracer_provider
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.processes import child_env, python_command

UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


def traced_run(receiver: OtlpReceiver, headers: dict[str, str]) -> tuple[Harness, dict[str, str]]:
    """One GET /pub/x through a TracedProxy; returns the harness (its records) and the headers the
    upstream received. The provider is shut down (its spans sent) before this returns."""
    provider = tracer_provider(role="test", url=otlp_traces_url(receiver.endpoint))
    echoed: dict[str, str] = {}

    async def scenario(h: Harness) -> None:
        proxy = h.proxy
        h.proxy = TracedProxy(
            tracer=OtelTracer(provider.get_tracer("test")),
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
    return harness, echoed


def test_the_request_log_the_upstream_and_the_spans_name_one_trace(receiver: OtlpReceiver) -> None:
    harness, upstream_headers = traced_run(receiver, {})

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
    harness, upstream_headers = traced_run(receiver, {"traceparent": UNSAMPLED})

    trace_id = UNSAMPLED.split("-")[1]
    assert harness.records[0].trace_id == trace_id
    assert upstream_headers["traceparent"].startswith(f"00-{trace_id}-")
    assert upstream_headers["traceparent"].endswith("-00")  # the client's decision travels on
    assert receiver.spans() == []


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

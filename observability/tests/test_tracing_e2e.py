"""Tracing as an operator runs it: a real web process (and a real Celery worker) exporting to a real
OTLP/HTTP receiver (tests/support/otlp_receiver.py decodes the protobuf it gets), a real upstream
echoing what it got."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from gateway import services
from tests.support.net import free_port, http_request
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.processes import MockUpstreams, celery_worker, web_server
from tests.support.redis_keys import key_prefix

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
STEPS = {"token_bucket_check", "distributed_limiter_check", "circuit_breaker", "upstream"}
# The SDK's batch delay (OTEL_BSP_SCHEDULE_DELAY, ms): spans leave within 0.1 s instead of 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
# Every trace sampled, as the README tells an operator who debugs: these tests look at every span.
EVERY_TRACE = {"OTEL_TRACES_SAMPLER": "parentbased_always_on", "OTEL_TRACES_SAMPLER_ARG": None}
# The operator's sampler unset: Sentinel's default (parentbased_traceidratio at 1 %).
DEFAULT_SAMPLER = {"OTEL_TRACES_SAMPLER": None, "OTEL_TRACES_SAMPLER_ARG": None}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def upstream(mock_upstream: MockUpstreams) -> str:
    url = mock_upstream("traced").url
    services.route_create(tenant=None, name="open", path_prefix="/open/", targets=[url], auth_mode="none")
    return url


def traced(receiver: OtlpReceiver, sampler: dict[str, str | None] = EVERY_TRACE) -> dict[str, str | None]:
    return {"ENABLE_TRACING": "true", "OTLP_ENDPOINT": receiver.endpoint, **FAST_EXPORT, **sampler}


def request_of(receiver: OtlpReceiver, correlation_id: str) -> ReceivedSpan:
    """The `proxy_request` span of the request sent with ``correlation_id``, once received."""
    found = receiver.wait_for(
        lambda spans: [
            s
            for s in spans
            if s.name == "proxy_request" and s.attributes.get("sentinel.correlation_id") == correlation_id
        ],
        what=f"the proxy_request span of {correlation_id}",
    )
    return found[0]


def children_of(receiver: OtlpReceiver, parent: ReceivedSpan, count: int) -> dict[str, ReceivedSpan]:
    spans = receiver.wait_for(
        lambda spans: (
            (found := [s for s in spans if s.parent_span_id == parent.span_id]) and len(found) >= count and found
        ),
        what=f"{count} child spans of {parent.name}",
    )
    return {span.name: span for span in spans}


def test_a_proxied_request_continues_the_clients_trace_through_every_step(
    receiver: OtlpReceiver, upstream: str
) -> None:
    incoming = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    headers = {"traceparent": incoming, "x-correlation-id": "trace-e2e-1"}

    with web_server(**traced(receiver)) as (port, _):
        status, _, body = http_request(port, "GET", "/open/orders/7?page=2", headers=headers)
        request = request_of(receiver, "trace-e2e-1")
        steps = children_of(receiver, request, 4)

    assert status == 200
    # proxy_request is the client's span's child, in the client's trace.
    assert (request.trace_id, request.parent_span_id, request.kind) == (CLIENT_TRACE, CLIENT_SPAN, "SERVER")
    assert request.attributes["http.request.method"] == "GET"
    assert request.attributes["http.route"] == "/open/"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["sentinel.decision"] == "forwarded"
    assert request.attributes["sentinel.tenant"] == "ip:127.0.0.1"
    assert request.status != "ERROR"
    assert request.resource["service.name"] == "sentinel"
    assert request.resource["sentinel.role"] == "web"
    # The four steps of SPEC 3, each a child of proxy_request in the same trace.
    assert set(steps) == STEPS
    assert {span.trace_id for span in steps.values()} == {CLIENT_TRACE}
    assert steps["upstream"].kind == "CLIENT"
    assert steps["upstream"].attributes["http.response.status_code"] == 200
    assert steps["circuit_breaker"].attributes["sentinel.breaker.state"] == "closed"
    # The upstream was told its parent is the upstream span, in the client's trace.
    sent_upstream = json.loads(body)["headers"]["traceparent"]
    assert sent_upstream == f"00-{CLIENT_TRACE}-{steps['upstream'].span_id}-01"


def test_a_request_without_traceparent_starts_a_trace_the_upstream_continues(
    receiver: OtlpReceiver, upstream: str
) -> None:
    with web_server(**traced(receiver)) as (port, _):
        _, _, body = http_request(port, "GET", "/open/x", headers={"x-correlation-id": "trace-e2e-root"})
        request = request_of(receiver, "trace-e2e-root")
        upstream_span = children_of(receiver, request, 4)["upstream"]

    assert request.parent_span_id == ""  # a root
    assert json.loads(body)["headers"]["traceparent"] == f"00-{request.trace_id}-{upstream_span.span_id}-01"


def test_refused_requests_are_marked_on_their_spans(receiver: OtlpReceiver, upstream: str) -> None:
    services.route_create(tenant=None, name="private", path_prefix="/private/", targets=[upstream], auth_mode="jwt")
    services.route_create(
        tenant=None, name="tight", path_prefix="/tight/", targets=[upstream], auth_mode="none",
        burst_capacity=1, refill_rate=0.001,
    )  # fmt: skip

    with web_server(**traced(receiver)) as (port, _):
        unauthenticated = http_request(port, "GET", "/private/x", headers={"x-correlation-id": "trace-401"})
        http_request(port, "GET", "/tight/x", headers={"x-correlation-id": "trace-200"})
        limited = http_request(port, "GET", "/tight/x", headers={"x-correlation-id": "trace-429"})
        refused_401 = request_of(receiver, "trace-401")
        refused_429 = request_of(receiver, "trace-429")
        bucket = children_of(receiver, refused_429, 1)["token_bucket_check"]

    assert (unauthenticated[0], limited[0]) == (401, 429)
    assert refused_401.failed
    assert refused_401.attributes["http.response.status_code"] == 401
    assert refused_401.attributes["sentinel.decision"] == "auth_failed"
    assert refused_429.failed
    assert (refused_429.attributes["sentinel.decision"], refused_429.attributes["sentinel.reason"]) == (
        "limited",
        "burst",
    )
    assert bucket.failed  # the step that refused says so
    # Refused at the bucket: the later steps never ran.
    assert not [s for s in receiver.spans() if s.parent_span_id == refused_429.span_id and s.name != bucket.name]


def test_django_requests_are_traced_and_metrics_and_health_are_not(receiver: OtlpReceiver, tmp_path: Path) -> None:
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log, web_server(log=log, LOG_LEVEL="info", **traced(receiver)) as (port, _):
        http_request(port, "GET", "/metrics")
        http_request(port, "GET", "/health")
        status, _, _ = http_request(
            port, "GET", "/api/v1/routes", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        )
        api = receiver.wait_for(
            lambda spans: [s for s in spans if s.attributes.get("url.path") == "/api/v1/routes"],
            what="the span of GET /api/v1/routes",
        )[0]

    assert status == 401
    assert (api.kind, api.trace_id, api.parent_span_id) == ("SERVER", CLIENT_TRACE, CLIENT_SPAN)
    # The route Django resolved, as a template (DRF's router pattern is a regex).
    assert (api.name, api.attributes["http.route"]) == ("GET /api/v1/routes", "/api/v1/routes")
    assert api.attributes["http.response.status_code"] == 401
    assert api.attributes["sentinel.correlation_id"]
    paths = {s.attributes.get("url.path") for s in receiver.spans()}
    assert not paths & {"/metrics", "/health"}
    # The process said where its spans go, once its logging was set up.
    assert f"tracing on: spans to {receiver.endpoint}/v1/traces, sampler parentbased_always_on" in log_path.read_text()


def test_nothing_is_exported_when_tracing_is_off(receiver: OtlpReceiver, upstream: str) -> None:
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}

    with web_server(OTLP_ENDPOINT=receiver.endpoint, ENABLE_TRACING=None, **FAST_EXPORT) as (port, process):
        status, _, body = http_request(port, "GET", "/open/x", headers=headers)
        http_request(port, "GET", "/api/v1/routes")
        # A stopped process has flushed whatever it had queued: nothing can arrive later.
        process.terminate()
        process.wait(timeout=20)

    assert status == 200
    # The trace still continues to the upstream, under the proxy's own span id.
    assert json.loads(body)["headers"]["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
    assert receiver.requests == 0


def test_a_collector_that_is_down_costs_requests_nothing(upstream: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    with web_server(ENABLE_TRACING="true", OTLP_ENDPOINT=nowhere, **FAST_EXPORT, **EVERY_TRACE) as (port, process):
        statuses = [http_request(port, "GET", f"/open/{n}")[0] for n in range(15)]  # under the burst of 20
        statuses.append(http_request(port, "GET", "/api/v1/routes")[0])
        # Stopping is not held up for good by spans that cannot be delivered (the exporter's own
        # deadline bounds its retries).
        process.terminate()
        process.wait(timeout=30)

    assert statuses == [200] * 15 + [401]


def test_a_stopping_web_process_sends_the_spans_it_still_holds(receiver: OtlpReceiver, upstream: str) -> None:
    # A batch delay longer than the test: the spans can only leave at the server's shutdown.
    slow_batches = {**traced(receiver), "OTEL_BSP_SCHEDULE_DELAY": "600000"}

    with web_server(**slow_batches) as (port, process):
        status = http_request(port, "GET", "/open/last", headers={"x-correlation-id": "trace-last"})[0]
        process.terminate()
        process.wait(timeout=30)

    assert status == 200
    assert [s.attributes["sentinel.correlation_id"] for s in receiver.spans("proxy_request")] == ["trace-last"]


def upstream_traceparent(port: int, path: str, headers: dict[str, str] | None = None) -> str:
    """The traceparent the upstream received for one GET of `path`."""
    status, _, body = http_request(port, "GET", path, headers=headers)
    assert status == 200
    return str(json.loads(body)["headers"]["traceparent"])


def test_with_a_ratio_of_zero_only_traces_the_client_sampled_are_exported(
    receiver: OtlpReceiver, upstream: str
) -> None:
    ratio_zero = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    sampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    unsampled_trace = "0af7651916cd43dd8448eb211c80319c"

    with web_server(**traced(receiver, ratio_zero)) as (port, process):
        root = upstream_traceparent(port, "/open/root", {"x-correlation-id": "ratio0-root"})
        unsampled = upstream_traceparent(port, "/open/u", {"traceparent": f"00-{unsampled_trace}-{CLIENT_SPAN}-00"})
        http_request(port, "GET", "/api/v1/routes")  # Django's span, a root: not sampled either
        kept = upstream_traceparent(port, "/open/s", {"traceparent": sampled, "x-correlation-id": "ratio0-kept"})
        children_of(receiver, request_of(receiver, "ratio0-kept"), 4)
        process.terminate()  # a stopped process has sent all it held: nothing else can come
        process.wait(timeout=30)

    assert (root[-2:], unsampled[-2:], kept[-2:]) == ("00", "00", "01")  # the upstreams are told too
    assert {s.trace_id for s in receiver.spans()} == {CLIENT_TRACE}
    assert len(receiver.spans()) == 5  # proxy_request and its four steps


def test_by_default_one_new_trace_in_a_hundred_and_every_client_sampled_one_is_exported(
    receiver: OtlpReceiver, mock_upstream: MockUpstreams
) -> None:
    services.route_create(
        tenant=None, name="wide", path_prefix="/wide/", targets=[mock_upstream("wide").url], auth_mode="none",
        burst_capacity=10_000, refill_rate=10_000, base_rate_limit=100_000,
    )  # fmt: skip
    roots = 200

    with web_server(**traced(receiver, DEFAULT_SAMPLER)) as (port, process):
        sent_upstream = [upstream_traceparent(port, f"/wide/{n}") for n in range(roots)]
        kept = upstream_traceparent(port, "/wide/k", {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        process.terminate()
        process.wait(timeout=30)

    exported = {s.trace_id for s in receiver.spans("proxy_request")}
    sampled_roots = {tp.split("-")[1] for tp in sent_upstream if tp.endswith("-01")}
    assert kept.endswith("-01") and CLIENT_TRACE in exported  # the client's sampled trace goes on
    # Exactly the traces whose sampled flag went upstream were exported, whole (proxy_request + 4 steps).
    assert exported - {CLIENT_TRACE} == sampled_roots
    assert len(receiver.spans()) == 5 * len(exported)
    # 1 % of 200: 2 expected; 40 or more has a probability below 1e-30 (binomial tail).
    assert len(sampled_roots) < roots // 5


def test_a_task_queued_in_a_traced_request_runs_in_the_same_trace_in_the_worker(
    receiver: OtlpReceiver, alice: User, tmp_path: Path
) -> None:
    # The processes' own broker queue (a key prefix on Redis, a folder in embedded mode); the
    # default sampler, the client's sampled traceparent deciding for the whole trace.
    env = {
        **traced(receiver, DEFAULT_SAMPLER),
        "CACHE_KEY_PREFIX": key_prefix("tracing-celery"),
        "SENTINEL_VAR_DIR": str(tmp_path),
    }
    headers = {
        "Authorization": f"Bearer {TokenSerializer.get_token(alice).access_token}",
        "Content-Type": "application/json",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    task = "rules.tasks.events_evaluate"

    with web_server(**env) as (port, _), celery_worker(name="tracing", **env):
        status = http_request(port, "POST", "/events", body=b'{"type": "order"}', headers=headers)[0]
        ran = receiver.wait_for(
            lambda spans: [s for s in spans if s.name == f"run/{task}" and s.trace_id == CLIENT_TRACE],
            what=f"the worker's span of {task} in the client's trace",
        )[0]
        queued = receiver.wait_for(
            lambda spans: [s for s in spans if s.name == f"apply_async/{task}" and s.trace_id == CLIENT_TRACE],
            what=f"the web's span queuing {task}",
        )[0]
        view = receiver.wait_for(
            lambda spans: [s for s in spans if s.parent_span_id == CLIENT_SPAN and s.kind == "SERVER"],
            what="the span of POST /events",
        )[0]

    assert status == 202
    assert (ran.kind, ran.resource["sentinel.role"]) == ("CONSUMER", "worker")
    assert (queued.kind, queued.resource["sentinel.role"]) == ("PRODUCER", "web")
    # The worker's span is a child of the web's publish, itself under the request's span.
    assert ran.parent_span_id == queued.span_id
    assert queued.parent_span_id == view.span_id
    assert view.attributes["url.path"] == "/events"
    assert not ran.failed

"""OpenTelemetry tracing (SPEC 3): the SDK set up once per process, the proxy's tracer, Django's spans.

With ``ENABLE_TRACING=true`` and ``OTLP_ENDPOINT`` (settings), `tracing_setup` installs the
official SDK's `TracerProvider` with a `BatchSpanProcessor` and the OTLP/HTTP protobuf exporter
(POST ``<OTLP_ENDPOINT>/v1/traces``), instruments Django (the paths no route of the proxy matches:
API, admin, auth) and returns the `OtelTracer` the proxy's spans go through. With tracing off it
returns None, imports none of the SDK, and the proxy is built without spans at all.

Celery (``opentelemetry-instrumentation-celery``): a task queued inside a traced context (a Django
view's span) carries that context in its message (an ``apply_async/<task>`` span, kind producer),
and the worker runs it in a ``run/<task>`` span (kind consumer) of the same trace. The worker sets
tracing up in each pool process as it starts (Celery's ``worker_process_init``, where the
instrumentation's documentation puts it: the batch processor's thread must be started after the
fork), with ``role="worker"``, and sends what it holds as the process stops
(``worker_process_shutdown``).

Spans leave the process from the batch processor's own thread: a request never waits on the
collector, and a collector that is down costs dropped spans (the SDK logs its retries), never a
failed or slower request. `tracing_shutdown` exports what is still queued when the server stops
(the ASGI lifespan's shutdown): the SDK's own ``atexit`` hook is not enough, since uvicorn ends
the process with the signal it received (SIGTERM), which skips ``atexit``.

Sampling (head sampling, decided when a trace starts): the operator's ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` when set, read by the SDK itself; else `DEFAULT_SAMPLER` with
`DEFAULT_SAMPLER_RATIO` (parent-based: a client's sampled ``traceparent`` is always continued and
exported, an unsampled one never). A request not sampled gets a non-recording ``proxy_request``
span and nothing more: `TracedProxy` builds no child span and computes no attribute for it. With
the default sampler the proxy's tracer does not even ask the SDK about such a request
(`Presampler`): it reads the same decision off the ids it already has, the SDK's own start of an
unsampled span having cost a fifth of a proxied request's instructions (docs/engine.md).

Names follow OpenTelemetry's semantic conventions for HTTP (the stable ones: ``http.request.method``,
``http.response.status_code``, ``http.route``; ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` makes Django's
instrumentation use them too), Sentinel's own under ``sentinel.``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.engine.tracing import AttributeValue, Span, TraceContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import Sampler

__all__ = [
    "DEFAULT_SAMPLER",
    "DEFAULT_SAMPLER_RATIO",
    "DJANGO_EXCLUDED_URLS",
    "OtelSpan",
    "OtelTracer",
    "Presampler",
    "PresetTraceIds",
    "default_sampler",
    "default_sampler_ratio",
    "otlp_traces_url",
    "route_template",
    "tracer_provider",
    "tracing_announce",
    "tracing_setup",
    "tracing_shutdown",
]

SERVICE_NAME = "sentinel"
# Django paths not traced: Prometheus' scrape and the health checks come every few seconds from
# machines, not users, and would bury the requests an operator looks for; static files likewise.
# Regexes searched in the full URL (opentelemetry-util-http's ExcludeList);
# OTEL_PYTHON_DJANGO_EXCLUDED_URLS replaces the list.
DJANGO_EXCLUDED_URLS = r"^https?://[^/]+/(metrics|health)/?$,^https?://[^/]+/static/"
# How long a stopping process waits for its last spans to leave: a collector that is down would
# hold it for the exporter's whole timeout (10 s, retries included) otherwise.
SHUTDOWN_TIMEOUT_S = 5.0
# The sampler when the operator names none (OTEL_TRACES_SAMPLER unset): the SDK's
# ParentBased(TraceIdRatioBased(ratio)), `parentbased_traceidratio` in OTEL_TRACES_SAMPLER's terms.
# 1 % of the traces Sentinel starts, as Istio's default (meshConfig random sampling 1.0 %, istio.io
# "Configure trace sampling") and Kong's (kong.conf tracing_sampling_rate 0.01); Envoy alone traces
# 100 %. Every trace a client sampled is kept whatever the ratio. Tracing every request cost one
# process 61 % of its throughput (docs/benchmarks.md): not a default for a gateway.
DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_RATIO = 0.01
_TRACES_PATH = "/v1/traces"  # the OTLP/HTTP path of traces (OTLP specification, "OTLP/HTTP Request")

_provider: TracerProvider | None = None
_tracer: OtelTracer | None = None


class OtelSpan:
    """An OpenTelemetry span behind the engine's `Span` interface."""

    __slots__ = ("context", "recording", "span")

    def __init__(self, span: trace.Span, parent_id: str | None) -> None:
        self.span = span
        self.recording = span.is_recording()  # False: not sampled, a no-op span
        ids = span.get_span_context()
        flags = "01" if ids.trace_flags.sampled else "00"
        self.context = TraceContext(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", parent_id, flags)

    @classmethod
    def unsampled(cls, context: TraceContext) -> OtelSpan:
        """A span the sampler dropped, made without the SDK: it records nothing, and `context`
        (flags ``00``) carries the trace on to the request log and the upstream."""
        span = cls.__new__(cls)
        span.span, span.recording = INVALID_SPAN, False
        span.context = TraceContext(context.trace_id, context.span_id, context.parent_id, "00")
        return span

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self.span.set_attributes(attributes)

    def fail(self, description: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        self.span.end()


class PresetTraceIds:
    """The SDK's `RandomIdGenerator`, except for the trace id of a new trace the proxy has already
    chosen (`preset`, consumed by the next `generate_trace_id` of the same thread): the SDK's
    sampler then decides on the id `Presampler` read, and the spans carry the id the request log
    records. An `IdGenerator` by its methods, wrapping the SDK's rather than inheriting from it:
    this module imports none of the SDK while tracing is off (one is built only when it is on)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        self._preset = threading.local()

    def preset(self, trace_id: int) -> None:
        self._preset.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self._preset, "trace_id", None)
        if trace_id is None:
            return self._random.generate_trace_id()
        self._preset.trace_id = None
        return trace_id

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return True  # a preset id is random too: `continue_trace` drew it, or a client sent it


class Presampler:
    """`DEFAULT_SAMPLER`'s decision (ParentBased(TraceIdRatioBased(ratio)) in the SDK), read off a
    request's ids before the SDK is asked, so that an unsampled request costs no SDK call.

    A client's ``traceparent`` decides by its sampled flag (ParentBased's remote-parent samplers:
    always on, always off); a new trace by its id's low 64 bits against the SDK's own bound
    (`TraceIdRatioBased.get_bound_for_rate`). `samples` is therefore the SDK's answer for the same
    ids: a test holds the two to it over ids around the bound.
    """

    def __init__(self, ratio: float, ids: PresetTraceIds) -> None:
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        self.bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self.ids = ids

    def samples(self, incoming: TraceContext) -> bool:
        if incoming.parent_id is not None:
            return bool(int(incoming.flags, 16) & 0x01)
        return int(incoming.trace_id[16:], 16) < self.bound  # the low 64 bits: TRACE_ID_LIMIT


class OtelTracer:
    """The engine's `Tracer` on an OpenTelemetry tracer: the proxy's spans, parents passed explicitly
    (no context attached to the task: nothing to detach, whatever the request does)."""

    def __init__(self, tracer: trace.Tracer, presampler: Presampler | None = None) -> None:
        """`presampler`: the sampler's decision read before the SDK is asked (the default sampler
        only, whose provider must then generate ids with the presampler's `PresetTraceIds`)."""
        self.tracer = tracer
        self.presampler = presampler

    def start_request(self, incoming: TraceContext, attributes: Mapping[str, AttributeValue]) -> OtelSpan:
        presampler = self.presampler
        if presampler is not None:
            if not presampler.samples(incoming):
                return OtelSpan.unsampled(incoming)
            if incoming.parent_id is None:
                presampler.ids.preset(int(incoming.trace_id, 16))
        parent = Context()  # a new trace, unless the client sent one
        if incoming.parent_id is not None:
            remote = SpanContext(
                int(incoming.trace_id, 16),
                int(incoming.parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(int(incoming.flags, 16)),
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        span = self.tracer.start_span("proxy_request", context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return OtelSpan(span, incoming.parent_id)

    def start_child(self, parent: Span, name: str, *, client: bool = False) -> OtelSpan:
        parent = cast(OtelSpan, parent)  # the engine hands back the spans this tracer made
        context = trace.set_span_in_context(parent.span)
        span = self.tracer.start_span(name, context=context, kind=SpanKind.CLIENT if client else SpanKind.INTERNAL)
        return OtelSpan(span, parent.context.span_id)


def otlp_traces_url(endpoint: str) -> str:
    """``OTLP_ENDPOINT`` (a collector's base URL) → the traces URL; one ending in /v1/traces is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(_TRACES_PATH) else endpoint + _TRACES_PATH


def tracing_setup(*, role: str) -> OtelTracer | None:
    """Sets up tracing for this process once (later calls return the same tracer), or None when
    ``ENABLE_TRACING`` is off.

    ``role`` names the process in the resource (``sentinel.role``: web, worker). Celery's task
    publishing and running are instrumented in every role, Django's requests in the web's: call it
    there before Django builds its handler (``get_asgi_application``), since the Django
    instrumentation adds its middleware to ``settings.MIDDLEWARE``.
    """
    global _provider, _tracer
    if not settings.ENABLE_TRACING:
        return None
    if _tracer is None:
        url = otlp_traces_url(str(settings.OTLP_ENDPOINT))
        ratio = default_sampler_ratio()
        ids = PresetTraceIds()
        _provider = tracer_provider(role=role, url=url, sampler=_ratio_sampler(ratio), id_generator=ids)
        trace.set_tracer_provider(_provider)
        if role == "web":
            _instrument_django(_provider)
        _instrument_celery(_provider)
        presampler = None if ratio is None else Presampler(ratio, ids)
        _tracer = OtelTracer(_provider.get_tracer("sentinel.gateway"), presampler)
    return _tracer


def tracing_announce() -> None:
    """Logs, at info on `sentinel.tracing`, where this process's spans go and how they are
    sampled; nothing with tracing off. Called once logging is set up (the web's lifespan start,
    a worker's process start): `tracing_setup` runs before Django configures logging."""
    if _tracer is None:
        return
    chosen = os.environ.get("OTEL_TRACES_SAMPLER", "").strip()
    sampler = (
        f"{chosen} {os.environ.get('OTEL_TRACES_SAMPLER_ARG', '').strip()}".strip()
        if chosen
        else f"{DEFAULT_SAMPLER} {os.environ.get('OTEL_TRACES_SAMPLER_ARG', '').strip() or DEFAULT_SAMPLER_RATIO}"
    )
    url = otlp_traces_url(str(settings.OTLP_ENDPOINT))
    logging.getLogger("sentinel.tracing").info(
        "tracing on: spans to %s, sampler %s", url, sampler, extra={"otlp_url": url, "sampler": sampler}
    )


def tracing_shutdown(*, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Exports the spans still queued and stops the exporter, waiting at most ``timeout_s``
    seconds (blocking: call it from a thread in async code). Nothing to do with tracing off."""
    if _provider is None:
        return
    # The SDK's shutdown has no timeout of its own: it runs in a thread we stop waiting for.
    stopping = threading.Thread(target=_provider.shutdown, name="otel-tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(timeout_s)


def default_sampler() -> Sampler | None:
    """`DEFAULT_SAMPLER` at ``OTEL_TRACES_SAMPLER_ARG`` (a ratio in [0, 1]) or `DEFAULT_SAMPLER_RATIO`
    when the operator set no ``OTEL_TRACES_SAMPLER``; None when they did (the SDK then reads both
    variables itself: OpenTelemetry's "General SDK Configuration"). An ARG that is not a number in
    [0, 1] raises ValueError, which stops the start with its message."""
    return _ratio_sampler(default_sampler_ratio())


def _ratio_sampler(ratio: float | None) -> Sampler | None:
    """`DEFAULT_SAMPLER` at `ratio`; None for None (the operator's sampler, read by the SDK)."""
    if ratio is None:
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(ratio))


def default_sampler_ratio() -> float | None:
    """The ratio `default_sampler` samples new traces at; None when the operator chose a sampler.
    Raises ValueError as `default_sampler` does."""
    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    ratio = float(arg) if arg else DEFAULT_SAMPLER_RATIO
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio in [0, 1]")
    return ratio


def tracer_provider(
    *, role: str, url: str, sampler: Sampler | None = None, id_generator: PresetTraceIds | None = None
) -> TracerProvider:
    """A provider exporting in batches over OTLP/HTTP to `url` (the traces URL), its resource naming
    the service and the process (`role`), sampling with `sampler` (None: the SDK's own choice from
    ``OTEL_TRACES_SAMPLER``, by default every trace). Not installed globally: `tracing_setup` does
    that, with `default_sampler()`."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over these.
    resource = Resource.create(
        {
            "service.name": SERVICE_NAME,
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
            "sentinel.role": role,
            "process.pid": os.getpid(),
        }
    )
    # PresetTraceIds is an IdGenerator by its methods (see it); None: the SDK's random ids.
    ids = cast("IdGenerator | None", id_generator)
    provider = TracerProvider(resource=resource, sampler=sampler, id_generator=ids)  # its atexit hook flushes at exit
    # The batch processor's defaults (OTEL_BSP_*: 5 s delay, 512 spans a batch, 2,048 queued) and the
    # exporter's (10 s timeout with retries, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT) are the SDK's.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def _instrument_django(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", DJANGO_EXCLUDED_URLS)
    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=excluded, response_hook=_response_hook)


def _instrument_celery(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]  # the package has no annotations here
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


# A URL pattern's parts as a person writes a route: DRF's routers give regexes
# (`^api/v1/routes/(?P<pk>[0-9]{1,18})/?$`), Django's path() converters (`<int:pk>`).
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def route_template(pattern: str) -> str:
    """`pattern` (what Django resolved: `ResolverMatch.route`) as a route template for span names
    and `http.route` (OpenTelemetry's HTTP conventions: "the matched route, the path template"):
    `^api/v1/routes/(?P<pk>[0-9]{1,18})/?$` → `/api/v1/routes/{pk}`, `dashboard/` → `/dashboard/`."""
    template = pattern.removeprefix("^").removesuffix("$").removesuffix("/?")
    template = _CONVERTER.sub(r"{\1}", _NAMED_GROUP.sub(r"{\1}", template)).replace("/?", "/")
    return "/" + template.lstrip("/")


def _response_hook(span: trace.Span, request: Any, response: Any) -> None:
    """Names Django's span `METHOD /route/{param}` with that template as `http.route` (the
    instrumentation uses the raw pattern: a regex for DRF's routes), and puts the correlation id
    Sentinel answered with on it, as the proxy's spans have it."""
    if not span.is_recording():
        return
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        route = route_template(str(match.route))
        span.update_name(f"{request.method} {route}")
        span.set_attribute("http.route", route)
    correlation_id = response.get("x-correlation-id") if hasattr(response, "get") else None
    if correlation_id:
        span.set_attribute("sentinel.correlation_id", correlation_id)

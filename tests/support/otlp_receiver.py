"""A real OTLP/HTTP trace receiver on 127.0.0.1, standing in for a collector (Jaeger, the
OpenTelemetry Collector) in tests: it decodes what it is sent with the `opentelemetry-proto`
messages and records the spans.

It answers as a collector does (OTLP specification, "OTLP/HTTP"): ``POST /v1/traces`` with an
``application/x-protobuf`` body (gzip- or deflate-encoded or not) → 200 with an
``ExportTraceServiceResponse``; another path → 404; another content type → 415; a body that does
not decode → 400.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.waiting import wait_until

TRACES_PATH = "/v1/traces"
_DECODERS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.decompress, "deflate": zlib.decompress, "": bytes}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector got it; ids in lower-case hex as in a ``traceparent``."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"


class OtlpReceiver:
    """Records what it receives; read it with `spans()`, or wait for some with `wait_for`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0  # export requests received, whatever they held
        self.server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        """The base URL to give as OTLP_ENDPOINT."""
        assert self.server is not None, "not started"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self._spans if name is None or span.name == name]

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], Any], *, timeout: float = 20, what: str) -> Any:
        """Waits until ``predicate(spans received so far)`` is truthy, and returns its value."""
        return wait_until(lambda: predicate(self.spans()), timeout=timeout, what=what)

    def record(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = [
            _received(span, _attributes(resource_spans.resource.attributes))
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self.requests += 1
            self._spans.extend(received)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _received(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        attributes=_attributes(span.attributes),
        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        resource=resource,
    )


def _export_answer(receiver: OtlpReceiver, path: str, headers: Message, body: bytes) -> tuple[int, bytes, str]:
    """(status, body, content type) of a collector's answer to one export request."""
    if path != TRACES_PATH:
        return 404, b"not found", "text/plain"
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
        return 415, b"unsupported content type", "text/plain"
    decode = _DECODERS.get(headers.get("Content-Encoding", "").strip().lower())
    try:
        if decode is None:
            raise DecodeError("unknown content encoding")
        receiver.record(decode(body))
    except (DecodeError, OSError, zlib.error):
        return 400, b"undecodable body", "text/plain"
    return 200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's requests.Session expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(*_export_answer(receiver, self.path, self.headers, body))

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

    return Handler


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A receiver listening on a free port of 127.0.0.1 for the block."""
    receiver = OtlpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

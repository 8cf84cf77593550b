"""Correlation ids and W3C trace context for proxied requests (SPEC 2 step 1), free of Django."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.correlation import random_hex as _random_hex

# W3C trace context, version 00: version-traceid-parentid-flags, lower-case hex only.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str  # the proxy's own span: the upstream's parent
    parent_id: str | None  # the client's span, when it sent a valid traceparent
    flags: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def continue_trace(header: str | None) -> TraceContext:
    """Continues a valid incoming `traceparent` under a new span, or starts a trace.

    An invalid or oversized header is dropped rather than forwarded (W3C: restart the trace).
    """
    if header and len(header) <= 55:
        match = _TRACEPARENT.fullmatch(header.strip())
        if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
            return TraceContext(match.group(1), _random_hex(64), match.group(2), match.group(3))
    return TraceContext(_random_hex(128), _random_hex(64), None, "01")

"""The one JSON error shape of SPEC 7, free of Django: the engine, the ASGI guards and DRF's handler
all build it here.

``{"error": {"code": "...", "message": "...", "details": ...}}`` with the right status. Services
raise ``DomainError`` subclasses; ``core.api_errors`` turns them (and DRF's and Django's errors) into
responses, the gateway engine and the ASGI layers write ``error_json`` themselves.

429s and 503s carry the headers of ``core.ratelimit_headers`` (README, "Rejections"): a
``TooManyRequests`` with its ``limit`` gets the whole RateLimit set and ``Retry-After``; a
``ServiceUnavailable`` gets ``Retry-After``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from core.ratelimit_headers import (
    LimitState,
    as_text,
    retry_after_seconds,
    service_unavailable_headers,
    too_many_requests_headers,
)

# The code a bare status gets when nothing more precise is known.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
# Retry-After for a 429 or 503 that reached the response without one (``ensure_retry_after``):
# the gateway's shed wait, a pace at which retrying a struggling service does it no harm.
DEFAULT_RETRY_AFTER_S = 5


class DomainError(Exception):
    """A business rule said no. Subclasses set the status and code; the message is for humans."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class TooManyRequests(DomainError):
    """429: the caller went past a limit. ``retry_after``: whole seconds until a retry can pass;
    ``limit``: the policy that refused (its quota, window, what is left), which the response
    states in the RateLimit headers (``core.ratelimit_headers``). Without ``limit`` only
    ``Retry-After`` is sent: every 429 Sentinel produces is expected to pass one."""

    status_code = 429
    code = "too_many_requests"

    def __init__(
        self, message: str, *, retry_after: int, code: str | None = None, limit: LimitState | None = None
    ) -> None:
        super().__init__(message, details={"retry_after": retry_after}, code=code)
        self.retry_after = retry_after
        self.limit = limit

    def headers(self) -> list[tuple[str, str]]:
        """The response headers: the whole set with a ``limit``, else ``Retry-After``."""
        if self.limit is None:
            return [("Retry-After", str(retry_after_seconds(self.retry_after)))]
        return as_text(too_many_requests_headers(self.limit, retry_after_s=self.retry_after))


class ServiceUnavailable(DomainError):
    """503: something this request needs is down or overloaded; retry after ``retry_after`` s."""

    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after_seconds(retry_after)}, code=code)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[str, str]]:
        return as_text(service_unavailable_headers(retry_after_s=self.retry_after))


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"}}``: the body of every error Sentinel answers."""
    return {"error": {"code": code, "message": message, "details": details}}


# The headers Django's SecurityMiddleware and XFrameOptionsMiddleware add to every answer, at the
# values settings.py leaves them (Django's defaults): Sentinel's own answers written outside Django
# (the proxy's refusals and local errors, POST /transaction, the ASGI guards, the HTTP server's
# 400s) carry them too, so no answer of Sentinel's is sniffed or framed (a test holds the two sets
# equal). An upstream's answer passes through the proxy as the upstream sent it.
OWN_ANSWER_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def error_json(code: str, message: str, details: Any = None) -> bytes:
    """``error_body`` encoded as UTF-8 JSON, for the layers that write bytes (ASGI, the engine)."""
    return json.dumps(error_body(code, message, details)).encode()

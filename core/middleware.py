"""Cross-cutting middleware for every non-proxy request: correlation ids and JSON errors.

Both are sync- and async-capable, so under ASGI they add no thread hop of their own.

SPEC 7, every error is JSON: an error is answered with ``{"error": {...}}`` on every path, except
to a client that ranks ``text/html`` above ``application/json`` in its ``Accept`` (a browser on
the admin or a page), which keeps Django's HTML page. No ``Accept``, ``*/*`` or a tie is JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import BadRequest, DisallowedHost, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.template.response import SimpleTemplateResponse
from django.views.defaults import bad_request

from core.api_errors import ensure_retry_after, error_response, is_api_path, too_large_response
from core.correlation import HEADER, accept_correlation_id, current_correlation_id
from core.errors import STATUS_CODES
from core.http import client_ip
from core.ratelimit_headers import RATELIMIT_HEADER_NAMES

access_logger = logging.getLogger("sentinel.access")
error_logger = logging.getLogger("sentinel.errors")
# Django's own logger for this event, so filters and alerts written for it keep working.
host_logger = logging.getLogger("django.security.DisallowedHost")

# How much of a refused Host is echoed in the answer and the log: enough to recognise it
# (DNS names are at most 253 characters, RFC 1035 2.3.4), never whatever length a client sends.
MAX_ECHOED_HOST_CHARS = 100

GetResponse = Callable[[HttpRequest], Any]
# What django.core.handlers.exception.response_for_exception answers with a 4xx, not a 500.
_CLIENT_ERRORS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation, MultiPartParserError)


class _DualModeMiddleware:
    """Runs natively in whichever mode Django calls it, sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.async_mode:
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, await self.get_response(request))

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class CorrelationIdMiddleware(_DualModeMiddleware):
    """Keeps a valid incoming ``x-correlation-id`` or makes one, and returns it on the response.

    The id is also put in a context variable while the request is served, so every log line
    written meanwhile carries it (``core.jsonlog.CorrelationIdFilter``).
    """

    def before(self, request: HttpRequest) -> HttpResponse | None:
        correlation_id = accept_correlation_id(request.headers.get(HEADER))
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        request._sentinel_token = current_correlation_id.set(correlation_id)  # type: ignore[attr-defined]
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response[HEADER] = request.correlation_id  # type: ignore[attr-defined]
        current_correlation_id.reset(request._sentinel_token)  # type: ignore[attr-defined]
        return response


class AccessLogMiddleware(_DualModeMiddleware):
    """One JSON line per request Django answers (``sentinel.access``): method, path, status,
    duration in ms and client IP. Runs inside ``CorrelationIdMiddleware``, so the line carries the
    request's id. (Counting requests is django-prometheus' middleware's job.)"""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        request._sentinel_started = time.perf_counter()  # type: ignore[attr-defined]
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        elapsed_ms = (time.perf_counter() - request._sentinel_started) * 1000  # type: ignore[attr-defined]
        access_logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed_ms, 2),
                "client_ip": client_ip(request),
            },
        )
        return response


class ApiErrorMiddleware(_DualModeMiddleware):
    """Makes every error the JSON of SPEC 7 (on API paths always; elsewhere unless the client
    prefers HTML, `prefers_html`), refuses oversized bodies on API paths up front, answers a
    Host not in ``ALLOWED_HOSTS`` with a 400 naming it, and gives a 429 or 503 without
    ``Retry-After`` one (``ensure_retry_after``).

    Django renders its own 404/405/500 pages as HTML (a debug page when DEBUG is on); a client of
    the API must get the same JSON shape whatever layer failed, and never a stack trace.
    """

    def before(self, request: HttpRequest) -> HttpResponse | None:
        try:
            # Checked here, before any later middleware asks: Django would log the client's
            # mistake as an error with a traceback and answer an HTML "Bad Request (400)".
            request.get_host()
        except DisallowedHost as exc:
            return _disallowed_host_response(request, exc)
        if not is_api_path(request.path):
            return None
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return error_response(400, "Content-Length is not a number.", code="bad_request")
        if length < 0:
            return error_response(400, "Content-Length is negative.", code="bad_request")
        if length > settings.API_MAX_BODY_BYTES:
            return too_large_response()
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # On every path: a 429 or 503 always says when to come back (shared decision 3).
        ensure_retry_after(response)
        if response.status_code < 400 or _keeps_html(request):
            return response
        if isinstance(response, SimpleTemplateResponse) and not is_api_path(request.path):
            # A page a view rendered for people with the status it chose (the admin's login page
            # answering 429 with its form and the wait): not an error page to replace.
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        replacement = error_response(response.status_code, _message_for(response), code=_code_for(response))
        for name in ("Allow", "WWW-Authenticate", *RATELIMIT_HEADER_NAMES):
            if name in response:
                replacement[name] = response[name]
        return replacement

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if _keeps_html(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return too_large_response()
        if isinstance(exception, _CLIENT_ERRORS):
            # Django turns these into their 4xx (404, 403, 400) itself; `after` makes that JSON.
            return None
        error_logger.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "Internal error; the correlation id identifies it in the logs.")
        # Logged just above with its traceback: Django would add an "Internal Server Error" line.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header value ranks ``text/html`` strictly above ``application/json``.

    Each type takes the q of the most specific range matching it (RFC 9110 12.5.1: ``text/html``
    over ``text/*`` over ``*/*``; q defaults to 1, a malformed q counts as 0). A browser's
    ``text/html,...,*/*;q=0.8`` → True; none, ``*/*``, ``application/json`` or a tie → False.
    """
    if not accept:
        return False
    html = _quality(accept, "text", "html")
    json = _quality(accept, "application", "json")
    return html > json


def _quality(accept: str, main: str, sub: str) -> float:
    best_specificity, best_q = -1, 0.0
    for media_range in accept.split(",")[:64]:  # bounded: a client may send thousands
        kind, *params = media_range.split(";")
        range_main, _, range_sub = kind.strip().lower().partition("/")
        if (range_main, range_sub) == (main, sub):
            specificity = 2
        elif (range_main, range_sub) == (main, "*"):
            specificity = 1
        elif (range_main, range_sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if specificity > best_specificity:
            best_specificity, best_q = specificity, q
    return best_q


def _keeps_html(request: HttpRequest) -> bool:
    """An error on this request keeps Django's HTML page: a page (not API) path, for a browser."""
    return not is_api_path(request.path) and prefers_html(request.headers.get("Accept"))


def _disallowed_host_response(request: HttpRequest, exc: DisallowedHost) -> HttpResponse:
    """The 400 for a Host not in ``ALLOWED_HOSTS``: a warning line (the client's mistake, no
    traceback) and the JSON error naming the problem, or Django's 400 page for a browser."""
    host = request.META.get("HTTP_HOST", request.META.get("SERVER_NAME", ""))
    shown = host if len(host) <= MAX_ECHOED_HOST_CHARS else host[:MAX_ECHOED_HOST_CHARS] + "…"
    host_logger.warning("Refused a request for a host not in ALLOWED_HOSTS: %r", shown, extra={"host": shown})
    if _keeps_html(request):
        return bad_request(request, exc)
    return error_response(
        400,
        f"The Host header {shown!r} is not allowed: this server does not serve that host (ALLOWED_HOSTS).",
        code="bad_request",
        details={"host": shown},
    )


def _code_for(response: HttpResponse) -> str:
    if response.status_code == 403 and getattr(response, "reason_phrase", "") == "Forbidden":
        content = getattr(response, "content", b"")
        if b"CSRF" in content:
            return "csrf_failed"
    return STATUS_CODES.get(response.status_code, "error")


def _message_for(response: HttpResponse) -> str:
    messages = {
        400: "The request could not be understood.",
        403: "You do not have permission to do this.",
        404: "Not found.",
        405: "Method not allowed.",
        413: "The request body is too large.",
        500: "Internal error; the correlation id identifies it in the logs.",
    }
    return messages.get(response.status_code, response.reason_phrase or "Error.")

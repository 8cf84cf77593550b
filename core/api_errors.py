"""SPEC 7's JSON error on Django's side: DRF's exception handler, Django's error views, and the
helpers the API error middleware uses. The shape itself is ``core.errors``.

``ensure_retry_after`` (called by the API error middleware on every Django response) gives any
429 or 503 that has none a ``Retry-After``; a DRF ``Throttled`` gets the whole RateLimit set.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.errors import (
    DEFAULT_RETRY_AFTER_S,
    OWN_ANSWER_HEADERS,
    STATUS_CODES,
    DomainError,
    ServiceUnavailable,
    TooManyRequests,
    error_body,
)
from core.paths import API_PREFIXES
from core.ratelimit_headers import LimitState, as_text, retry_after_seconds, too_many_requests_headers


def error_response(
    status: int, message: str, *, code: str | None = None, details: Any = None, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse(error_body(code or STATUS_CODES.get(status, "error"), message, details), status=status)
    _own_headers(response)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def ensure_retry_after(response: HttpResponse) -> HttpResponse:
    """Gives a 429 or 503 without ``Retry-After`` one of ``DEFAULT_RETRY_AFTER_S`` (a /health 503,
    a view that returned its own 429): decision 3 holds for every Django response, not only for the
    errors raised through ``api_exception_handler``."""
    if response.status_code in (429, 503) and not response.has_header("Retry-After"):
        response["Retry-After"] = str(DEFAULT_RETRY_AFTER_S)
    return response


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error a view raises, in the shape of SPEC 7."""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        if isinstance(exc, TooManyRequests | ServiceUnavailable):
            headers.update(exc.headers())
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        return Response(_too_large_body(), status=413)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # unexpected: the API error middleware logs it and answers a JSON 500
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if isinstance(exc, exceptions.Throttled):
        headers.update(_throttled_headers(exc, context))
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request is not valid.", exc.detail)
    elif isinstance(exc.detail, dict):
        # simplejwt's shape: {"detail": ..., "code": ..., "messages": [...]}.
        extra = {key: value for key, value in exc.detail.items() if key not in ("detail", "code")}
        code = str(exc.detail.get("code") or STATUS_CODES.get(exc.status_code, "error"))
        body = error_body(code, str(exc.detail.get("detail", "")), extra or None)
    else:
        codes = exc.get_codes()
        body = error_body(
            codes if isinstance(codes, str) else STATUS_CODES.get(exc.status_code, "error"), str(exc.detail)
        )
        if isinstance(exc, exceptions.Throttled):
            body["error"]["code"] = "too_many_requests"
            body["error"]["details"] = {"retry_after": int(headers["Retry-After"])}
    return Response(body, status=exc.status_code, headers=headers)


def _throttled_headers(exc: exceptions.Throttled, context: dict[str, Any]) -> list[tuple[str, str]]:
    """A DRF throttle's 429 headers: the whole set for the view's rate throttle.

    DRF keeps no reference to the throttle that refused, only its ``wait`` (seconds until the
    oldest counted request leaves the throttle's window, i.e. until one more is allowed): the
    quota is read again from the view's first rate throttle (``SimpleRateThrottle``; a
    ``ScopedRateThrottle`` takes its rate from the view's scope). A view without one gets
    ``Retry-After`` alone.
    """
    seconds = getattr(exc, "wait", None)
    wait = float(seconds) if seconds is not None else float(DEFAULT_RETRY_AFTER_S)
    limit = _rate_throttle_limit(context.get("view"), wait)
    if limit is None:
        return [("Retry-After", str(retry_after_seconds(wait)))]
    return as_text(too_many_requests_headers(limit, retry_after_s=wait))


def _rate_throttle_limit(view: Any, wait: float) -> LimitState | None:
    for throttle in view.get_throttles() if view is not None else ():
        if not isinstance(throttle, SimpleRateThrottle):
            continue
        scope = throttle.scope
        if isinstance(throttle, ScopedRateThrottle):
            # Its scope, hence its rate, is the view's (DRF sets it in allow_request).
            scope = throttle.scope = getattr(view, throttle.scope_attr, None)
            if not scope:
                continue
            rate = throttle.get_rate()
        else:
            rate = getattr(throttle, "rate", None)
        quota, window_s = throttle.parse_rate(rate)
        if quota is not None:
            return LimitState(str(scope or type(throttle).__name__), quota, int(window_s or 0), 0, wait)
    return None


def _too_large_body() -> dict[str, Any]:
    limit = settings.API_MAX_BODY_BYTES
    return error_body("payload_too_large", f"The request body is larger than {limit} bytes.", {"max_bytes": limit})


def too_large_response() -> JsonResponse:
    return _own_headers(JsonResponse(_too_large_body(), status=413))


def _own_headers(response: JsonResponse) -> JsonResponse:
    """Gives an error built here the security headers: one built outside SecurityMiddleware
    (ApiErrorMiddleware's replacements of Django's 404 and 403 pages, a refused Host, an
    oversized body) must not lose what that middleware adds (`OWN_ANSWER_HEADERS`)."""
    for header, text in OWN_ANSWER_HEADERS:
        response[header.decode()] = text.decode()
    return response


# Django's own error views, used when DEBUG is off: JSON on API paths, HTML elsewhere.
def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(400, "The request could not be understood.")
    return defaults.bad_request(request, exception or Exception("bad request"))


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(403, "You do not have permission to do this.")
    return defaults.permission_denied(request, exception or Exception("permission denied"))


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(404, "Not found.")
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(500, "Internal error; the correlation id identifies it in the logs.")
    return defaults.server_error(request)

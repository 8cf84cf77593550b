"""The one JSON error shape of SPEC 7, and the places that turn failures into it.

``{"error": {"code": "...", "message": "...", "details": ...}}`` with the right status. Services
raise ``DomainError`` subclasses; the DRF exception handler and the API error middleware turn
everything (DRF errors, Django's 404/405/413, unexpected exceptions) into this shape.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response

logger = logging.getLogger("sentinel.errors")

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
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after}, code=code)
        self.retry_after = retry_after


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, message: str, *, code: str | None = None, details: Any = None, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse(error_body(code or STATUS_CODES.get(status, "error"), message, details), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def is_api_path(path: str) -> bool:
    return path.startswith(settings.SENTINEL_API_PREFIXES)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error a view raises, in the shape of SPEC 7."""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
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
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
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
            body["error"]["details"] = {"retry_after": headers.get("Retry-After")}
    return Response(body, status=exc.status_code, headers=headers)


def _too_large_body() -> dict[str, Any]:
    limit = settings.API_MAX_BODY_BYTES
    return error_body("payload_too_large", f"The request body is larger than {limit} bytes.", {"max_bytes": limit})


def too_large_response() -> JsonResponse:
    return JsonResponse(_too_large_body(), status=413)


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

"""Django-side 429s and 503s carry the headers of core.ratelimit_headers (README, "Rejections")."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.api_errors import api_exception_handler
from core.errors import ServiceUnavailable, TooManyRequests
from core.middleware import ApiErrorMiddleware
from core.ratelimit_headers import LimitState


def handled(exc: Exception, view: Any = None) -> Response:
    response = api_exception_handler(exc, {"view": view, "request": None})
    assert response is not None
    return response


def test_a_too_many_requests_with_its_limit_carries_the_whole_set() -> None:
    # Given a limiter that knows its policy (the failed-login limiter, once it passes one)
    limit = LimitState("login-username", limit=5, window_s=900, remaining=0, reset_s=41.2)

    response = handled(TooManyRequests("Too many failed logins.", retry_after=42, limit=limit))

    assert response.status_code == 429
    assert response["Retry-After"] == "42"
    assert response["RateLimit-Policy"] == '"login-username";q=5;w=900'
    assert response["RateLimit"] == '"login-username";r=0;t=42'
    assert response["RateLimit-Limit"] == "5"
    assert response["RateLimit-Remaining"] == response["X-RateLimit-Remaining"] == "0"
    assert response.data["error"]["details"] == {"retry_after": 42}


def test_a_service_unavailable_carries_retry_after() -> None:
    response = handled(ServiceUnavailable("The brain is down.", retry_after=2.5))

    assert (response.status_code, response["Retry-After"]) == (503, "3")
    assert response.data["error"]["code"] == "service_unavailable"


class _Throttled(APIView):
    throttle_scope = "signup"
    throttle_classes = [ScopedRateThrottle]


@pytest.mark.parametrize(("wait", "expected"), [(0.4, "1"), (59.5, "60"), (3600.0, "3600")])
def test_a_drf_throttle_429_carries_the_whole_set_rounded_up(wait: float, expected: str) -> None:
    # DRF's own handler wrote int(wait): 0.4 s became "Retry-After: 0"
    response = handled(exceptions.Throttled(wait=wait), view=_Throttled())

    assert response.status_code == 429
    assert response["Retry-After"] == expected
    assert response["RateLimit-Policy"].startswith('"signup";q=')
    assert response["RateLimit-Remaining"] == "0"
    assert int(response["RateLimit-Reset"]) <= int(expected)
    assert response.data["error"]["details"] == {"retry_after": int(expected)}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("path", ["/api/v1/x", "/health", "/admin/"])
def test_any_django_429_or_503_without_retry_after_gets_one(status: int, path: str) -> None:
    def bare(request: HttpRequest) -> HttpResponse:
        return HttpResponse("busy", status=status, content_type="text/plain")

    response = ApiErrorMiddleware(bare)(RequestFactory().get(path))

    assert isinstance(response, HttpResponse)
    assert response["Retry-After"] == "5"


def test_a_rebuilt_api_error_keeps_the_ratelimit_headers() -> None:
    def throttled_html(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("<h1>slow down</h1>", status=429)
        response["Retry-After"] = "7"
        response["RateLimit-Policy"] = '"x";q=1;w=1'
        return response

    response = ApiErrorMiddleware(throttled_html)(RequestFactory().get("/api/v1/x"))

    assert isinstance(response, HttpResponse)
    assert response["Content-Type"] == "application/json"
    assert (response["Retry-After"], response["RateLimit-Policy"]) == ("7", '"x";q=1;w=1')

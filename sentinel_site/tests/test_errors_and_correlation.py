"""JSON errors on every API path, correlation ids, and JSON log lines that carry them."""

from __future__ import annotations

import json
import logging

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from core.errors import OWN_ANSWER_HEADERS
from core.middleware import ApiErrorMiddleware

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/auth/nope", "/events/unknown", "/api/v1/tenants/x/y/z"])
def test_unknown_api_paths_are_a_json_404(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == {"code": "not_found", "message": "Not found.", "details": None}


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones() -> None:
    response = Client().get("/auth/token")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_an_unexpected_exception_on_an_api_path_is_a_json_500_without_a_trace() -> None:
    def explode(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("secret internals")

    middleware = ApiErrorMiddleware(explode)
    request = RequestFactory().get("/api/v1/anything")

    response = middleware.process_exception(request, RuntimeError("secret internals"))

    assert response is not None
    assert response.status_code == 500
    body = json.loads(response.content)
    assert body["error"]["code"] == "server_error"
    assert "secret internals" not in response.content.decode()


def test_html_pages_keep_html_errors_for_a_browser() -> None:
    # Issue 8 (SPEC 7): only a client preferring HTML keeps Django's page; others get the JSON.
    response = Client().get("/no-such-page", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_declared_oversized_body_is_refused_before_it_is_read(settings: object) -> None:
    settings.API_MAX_BODY_BYTES = 1024

    response = Client().generic("POST", "/auth/signup", b"x", content_type="application/json", CONTENT_LENGTH="99999")

    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"max_bytes": 1024}


def test_a_valid_correlation_id_is_kept_and_returned() -> None:
    response = Client().get("/health", HTTP_X_CORRELATION_ID="req-42.abc_DEF")

    assert response["x-correlation-id"] == "req-42.abc_DEF"


@pytest.mark.parametrize("bad", ["has spaces", "x" * 129, "semi;colon", "ünïcode", ""])
def test_an_invalid_correlation_id_is_replaced(bad: str) -> None:
    response = Client().get("/health", HTTP_X_CORRELATION_ID=bad)

    returned = response["x-correlation-id"]
    assert returned != bad
    assert len(returned) == 32


def test_log_lines_are_json_and_carry_the_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    from core.jsonlog import CorrelationIdFilter, JsonFormatter

    with caplog.at_level(logging.INFO, logger="sentinel.access"):
        Client().get("/health", HTTP_X_CORRELATION_ID="trace-me-1")

    record = next(r for r in caplog.records if r.name == "sentinel.access")
    CorrelationIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["correlation_id"] == "trace-me-1"
    assert line["path"] == "/health"
    assert line["status"] in (200, 503)
    assert line["level"] == "info"


def test_openapi_schema_and_swagger_ui_are_served() -> None:
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    docs = Client().get("/docs")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/auth/signup", "/auth/token", "/api/v1/api-keys", "/api/v1/tenants"} <= set(paths)
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_prometheus_metrics_are_served() -> None:
    Client().get("/health")

    response = Client().get("/metrics")

    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


@pytest.mark.parametrize(
    "path", ["/api/v1/routes", "/api/v1/api-keys", "/auth/token", "/api/v1/rules", "/api/v1/events"]
)
def test_json_nested_too_deep_for_python_is_a_400_on_every_api(path: str, alice: object, api: object) -> None:
    client = api(alice)  # type: ignore[operator]

    response = client.post(path, data="[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/routes", '{"name": "a", "name": "b", "path_prefix": "/a/"}'),
        ("/auth/token", '{"username": "alice", "username": "staff", "password": "x"}'),
        ("/api/v1/events", '{"type": "order", "amount": 1, "amount": 900}'),
        ("/api/v1/rules", '{"name": "r", "condition": {"a": 1, "a": 2}}'),
    ],
)
def test_an_object_naming_a_key_twice_is_a_400_on_every_api(path: str, body: str, alice: object, api: object) -> None:
    # Which of the two wins depends on the parser: Sentinel's and an upstream's could disagree.
    client = api(alice)  # type: ignore[operator]

    response = client.post(path, data=body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert "appears twice" in error["message"]


def test_the_security_headers_of_sentinels_own_answers_are_djangos(alice: object, api: object) -> None:
    # Answers written outside Django (the proxy's refusals, POST /transaction, the ASGI guards)
    # send OWN_ANSWER_HEADERS: the same names and values Django's middleware gives its own.
    response = api(alice).get("/api/v1/routes")  # type: ignore[operator]

    assert {name.decode(): response.headers.get(name.decode()) for name, _ in OWN_ANSWER_HEADERS} == {
        name.decode(): value.decode() for name, value in OWN_ANSWER_HEADERS
    }


@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("get", "/nope", {}),  # Django's 404, made JSON by ApiErrorMiddleware
        ("get", "/static/nope.js", {}),
        ("post", "/login/", {"data": {"username": "a"}}),  # CSRF's 403
        ("get", "/health", {"HTTP_HOST": "evil.example"}),  # a Host not allowed
        ("get", "/api/v1/nope", {}),
    ],
)
def test_json_errors_built_outside_the_security_middleware_keep_its_headers(
    method: str, path: str, extra: dict[str, object]
) -> None:
    response = getattr(Client(enforce_csrf_checks=True), method)(path, **extra)

    assert response.status_code >= 400 and response["Content-Type"].startswith("application/json")
    assert {name.decode(): response.headers.get(name.decode()) for name, _ in OWN_ANSWER_HEADERS} == {
        name.decode(): value.decode() for name, value in OWN_ANSWER_HEADERS
    }, response.status_code

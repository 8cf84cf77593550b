"""The web process as a user runs it (`manage.py serve`): real HTTP against the ASGI stack."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.net import http_request
from tests.support.processes import web_process


@pytest.fixture(scope="module")
def port(django_db_setup: None) -> Iterator[int]:
    with web_process(API_MAX_BODY_BYTES="65536") as web_port:
        yield web_port


def test_a_chunked_upload_past_the_limit_is_a_json_413(port: int) -> None:
    # No Content-Length: only counting the chunks as they arrive can stop this one.
    chunks = iter([b'{"username": "' + b"a" * 16384] * 8 + [b'"}'])

    status, headers, body = http_request(
        port, "POST", "/auth/signup", body=chunks, headers={"Content-Type": "application/json"}
    )

    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.django_db(transaction=True)
def test_a_chunked_json_body_reaches_the_api_whole() -> None:
    # DRF reads a body up to CONTENT_LENGTH; without the guard's de-chunking it read nothing and
    # answered that username and password were required. (A process of its own: this request
    # reads the database, which the module's process is not given.)
    chunks = iter([b'{"username": "nob', b'ody", "pass', b'word": "wrong-password"}'])

    with web_process() as port:
        status, _, body = http_request(
            port, "POST", "/auth/token", body=chunks, headers={"Content-Type": "application/json"}
        )

    assert status == 401, body
    assert json.loads(body)["error"]["message"] == "Wrong username or password."


def test_a_declared_oversized_upload_is_refused_at_once(port: int) -> None:
    status, _, body = http_request(
        port, "POST", "/auth/token", body=b"{}" + b" " * 70000, headers={"Content-Type": "application/json"}
    )

    assert status == 413
    assert json.loads(body)["error"]["details"] == {"max_bytes": 65536}


def test_malformed_json_over_http_is_a_json_400(port: int) -> None:
    status, headers, body = http_request(
        port, "POST", "/auth/token", body=b'{"username": ', headers={"Content-Type": "application/json"}
    )

    assert status == 400
    assert json.loads(body)["error"]["code"] == "parse_error"
    assert len(headers["x-correlation-id"]) == 32


def test_the_correlation_id_is_returned_over_http(port: int) -> None:
    _, headers, _ = http_request(port, "GET", "/health", headers={"x-correlation-id": "abc-123"})

    assert headers["x-correlation-id"] == "abc-123"


@pytest.mark.parametrize("path", ["/docs", "/admin/login/", "/"])
def test_html_pages_render(port: int, path: str) -> None:
    status, headers, _ = http_request(port, "GET", path)

    assert status == 200
    assert headers["content-type"].startswith("text/html")


def test_admin_static_files_are_served(port: int) -> None:
    status, headers, _ = http_request(port, "GET", "/static/admin/css/base.css")

    assert status == 200
    assert headers["content-type"].startswith("text/css")

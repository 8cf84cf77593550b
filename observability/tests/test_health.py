"""`GET /health`, in-process and from real web processes started with chosen environments."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.support.net import free_port, http_request
from tests.support.processes import web_process
from tests.support.services import require_redis


@pytest.mark.django_db
def test_health_reports_each_component() -> None:
    response = Client().get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["broker"]["status"] == "ok"
    assert body["components"]["redis"]["status"] in ("ok", "skipped")
    assert body["components"]["worker"]["status"] in ("unknown", "ok", "stale")


@pytest.mark.django_db
def test_health_is_503_naming_redis_when_redis_is_unreachable() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"

    with web_process(REDIS_URL=closed) as port:
        status, _, raw = http_request(port, "GET", "/health")

    body = json.loads(raw)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["components"]["redis"]["status"] == "down"
    assert "Connection" in body["components"]["redis"]["error"]
    assert body["components"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_health_is_200_with_the_real_redis() -> None:
    url = require_redis()

    with web_process(REDIS_URL=url) as port:
        status, _, raw = http_request(port, "GET", "/health")

    body = json.loads(raw)
    assert status == 200, body
    assert body["mode"] == "production"
    assert body["components"]["redis"]["status"] == "ok"
    assert body["components"]["broker"]["status"] == "ok"
    assert body["components"]["broker"]["transport"] == "redis"

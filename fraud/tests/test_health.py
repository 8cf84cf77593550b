"""The brain's component of `GET /health`: ok when its gRPC health service answers SERVING, down
when it does not, and informative only (a brain that is down does not make /health a 503)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.test import Client
from pytest_django import Settings

from fraud.health import CHECK_TIMEOUT_SECONDS, check_brain
from tests.support.fake_brain import FakeBrain, fake_brain


@pytest.fixture
def brain(settings: Settings) -> Iterator[FakeBrain]:
    with fake_brain() as running:
        settings.SENTINEL_FRAUD = {**settings.SENTINEL_FRAUD, "BRAIN_ADDRESS": running.address}
        yield running


def test_a_serving_brain_is_ok(brain: FakeBrain) -> None:
    assert check_brain() == {"status": "ok", "address": brain.address}


def test_a_stopped_brain_is_down_within_the_checks_timeout(brain: FakeBrain) -> None:
    brain.stop()

    started = time.monotonic()
    result = check_brain()

    assert result["status"] == "down" and result["error"] == "UNAVAILABLE"
    assert time.monotonic() - started < CHECK_TIMEOUT_SECONDS + 0.5


@pytest.mark.django_db
def test_health_names_the_brain_and_stays_200_when_it_is_down(brain: FakeBrain) -> None:
    up = Client().get("/health").json()
    brain.stop()
    response = Client().get("/health")

    assert up["components"]["brain"]["status"] == "ok"
    assert response.json()["components"]["brain"]["status"] == "down"
    assert response.status_code == 200, response.json()
    assert "latency_ms" in response.json()["components"]["brain"]

"""`/metrics` as Prometheus scrapes it: the gateway's metrics summed over several web processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import services
from tests.support.net import http_request
from tests.support.processes import MockUpstreams, web_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("upstream").url


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, headers, body = http_request(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_add_up_over_two_processes_and_show_limits_and_breakers(tmp_path: Path, upstream: str) -> None:
    # Given two gateway processes writing their samples to one folder, as uvicorn workers do
    env = {
        "REDIS_URL": require_redis(),
        "CACHE_KEY_PREFIX": key_prefix("metrics"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "BREAKER_CONSECUTIVE_FAILURES": "2",
        "BREAKER_COOLDOWN_MS": "60000",
        "GATEWAY_FORCED_PRESSURE": "0",
    }
    services.route_create(
        tenant=None, name="m", path_prefix="/m/", targets=[upstream], auth_mode="none", burst_capacity=2
    )
    broken = upstream.replace("127.0.0.1", "localhost")  # another target URL: its own breaker
    services.route_create(tenant=None, name="b", path_prefix="/b/", targets=[broken], auth_mode="none")

    with web_process(**env) as first, web_process(**env) as second:
        # When requests go through both, some refused by the per-process burst bucket (2 each)
        first_statuses = [http_request(first, "GET", "/m/x")[0] for _ in range(4)]
        second_statuses = [http_request(second, "GET", "/m/x")[0] for _ in range(1)]
        breaker_statuses = [http_request(second, "GET", "/b/status/503")[0] for _ in range(3)]
        http_request(first, "GET", "/health")
        # Then one scrape of either process reports the fleet's totals
        samples = scrape(first)

    assert first_statuses == [200, 200, 429, 429]
    assert second_statuses == [200]
    assert breaker_statuses == [503, 503, 503]
    assert value(samples, "sentinel_http_requests_total", method="GET", route="/m/", status="200") == 3
    assert value(samples, "sentinel_http_requests_total", method="GET", route="/m/", status="429") == 2
    assert value(samples, "sentinel_http_requests_total", method="GET", route="/b/", status="503") == 3
    # Django's own requests are counted once, by django-prometheus (SPEC 3: its defaults)
    assert (
        value(
            samples,
            "django_http_responses_total_by_status_view_method_total",
            method="GET",
            view="health",
            status="200",
        )
        >= 1
    )
    assert value(samples, "sentinel_ratelimit_rejections_total", limiter="local") == 2
    assert value(samples, "sentinel_http_request_duration_seconds_count", route="/m/") == 5
    assert value(samples, "sentinel_slo_requests_total", outcome="error") == 3  # two upstream 503s, one breaker 503
    assert (
        value(samples, "sentinel_slo_requests_total", outcome="good")
        + value(samples, "sentinel_slo_requests_total", outcome="slow")
        == 5
    )
    assert value(samples, "sentinel_gateway_decisions_total", decision="breaker_open") == 1
    # The breaker's state is the fleet's: open (1) for the failing target, closed (0) for the other
    assert value(samples, "sentinel_circuit_breaker_state", upstream=broken) == 1
    assert (("sentinel_circuit_breaker_state", frozenset({("upstream", upstream)})) in samples) and value(
        samples, "sentinel_circuit_breaker_state", upstream=upstream
    ) == 0
    assert ("sentinel_active_requests", frozenset()) in samples
    assert ("sentinel_pressure_global", frozenset()) in samples

"""`/metrics` as Prometheus scrapes it: every SPEC 3 family from the first scrape, the gateway's
metrics summed over several web processes, and each run counting from zero."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import services
from rules.models import ChannelKind
from tests.support.net import free_port, http_request
from tests.support.processes import MockUpstreams, child_env, python_command, running_process, web_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import WaitTimeout, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("upstream").url


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# SPEC 3's families, as the parser names them (a counter's without `_total`), and django-prometheus'
# defaults that need no request of their own to exist.
SPEC_FAMILIES = {
    "sentinel_http_requests",
    "sentinel_http_request_duration_seconds",
    "sentinel_active_requests",
    "sentinel_pressure_global",
    "sentinel_circuit_breaker_state",
    "sentinel_ratelimit_rejections",
    "sentinel_slo_requests",
    "events_ingested",
    "rules_triggered",
    "notifications_sent",
    "sentinel_checks",
    "sentinel_latency_seconds",
    "sentinel_monitors_up",
    "sentinel_fraud_decisions",
    "sentinel_fraud_fail_open",
    "sentinel_log_dropped",
    "django_http_requests_before_middlewares",
    "django_http_requests_latency_including_middlewares_seconds",
    "django_http_requests_total_by_method",
}


def scrape_text(port: int) -> str:
    status, headers, body = http_request(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    promtool = shutil.which("promtool")  # Debian's `prometheus` package, when installed
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    return body.decode()


def scrape_until(port: int, ready: Callable[[Samples], bool], what: str) -> Samples:
    """The first scrape of `port` that is `ready`: a process's own counts are in its scrape at once,
    the other processes' once they have written them (gateway.metrics.FLUSH_SECONDS). Fails after
    10 s, naming `what`."""

    def scraped() -> Samples | None:
        samples = scrape(port)
        return samples if ready(samples) else None

    return cast(Samples, wait_until(scraped, timeout=10, what=what))


def scrape_once_summed(port: int, proxied: int) -> Samples:
    """The first scrape of `port` whose proxied 200s on /m/ sum to `proxied` (`scrape_until`);
    a count that never arrives, or overshoots, fails the test with the last sum."""
    last: list[float] = []

    def summed(samples: Samples) -> bool:
        last[:] = [proxied_ok(samples)]
        return last[0] == proxied

    try:
        return scrape_until(port, summed, f"a scrape of {port} summing {proxied} proxied requests")
    except WaitTimeout:
        pytest.fail(f"the scrape of {port} sums {last} proxied requests, not {proxied}")


def scrape(port: int) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def families_with_samples(port: int) -> set[str]:
    return {family.name for family in text_string_to_metric_families(scrape_text(port)) if family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def present(samples: Samples, name: str, **labels: str) -> bool:
    return (name, frozenset(labels.items())) in samples


def proxied_ok(samples: Samples, route: str = "/m/") -> float:
    return value(samples, "sentinel_http_requests_total", method="GET", route=route, status="200")


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
        # Then one scrape of either process reports the fleet's totals (once the second has
        # written its counts)
        samples = scrape_until(
            first,
            lambda samples: (
                value(samples, "sentinel_http_requests_total", method="GET", route="/b/", status="503") > 2
                and proxied_ok(samples) > 2
            ),
            "the second process's counts in the first one's scrape",
        )

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


def test_every_spec_family_is_there_before_any_traffic_and_adds_up_after(tmp_path: Path, upstream: str) -> None:
    # Given a route, and two web processes of a new run counting into one folder
    services.route_create(tenant=None, name="m", path_prefix="/m/", targets=[upstream], auth_mode="none")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "CACHE_KEY_PREFIX": key_prefix("metrics")}
    with web_process(**env) as first, web_process(**env) as second:
        # When Prometheus scrapes before any request was proxied or any event, check or score happened
        before = scrape(first)
        families = families_with_samples(second)

        # Then every family is there, its series known at start at zero
        assert SPEC_FAMILIES - families == set()
        for kind in ChannelKind.values:
            for outcome in ("sent", "failed", "dead"):
                assert present(before, "notifications_sent_total", channel=kind, outcome=outcome)
        for name, label, values in (
            ("sentinel_slo_requests_total", "outcome", ("good", "slow", "error")),
            ("sentinel_ratelimit_rejections_total", "limiter", ("local", "distributed", "unavailable")),
            ("sentinel_fraud_decisions_total", "decision", ("approve", "review", "decline")),
            ("sentinel_checks_total", "outcome", ("up", "down")),
        ):
            assert all(present(before, name, **{label: item}) for item in values), name
        for status in ("200", "401", "429", "502", "503", "504"):
            assert present(before, "sentinel_http_requests_total", method="GET", route="/m/", status=status)
        assert present(before, "sentinel_http_request_duration_seconds_count", route="/m/")
        assert value(before, "sentinel_circuit_breaker_state", upstream=upstream) == 0
        assert present(before, "sentinel_monitors_up") and present(before, "events_ingested_total")
        counted = [name for (name, _), number in before.items() if name.startswith("sentinel_") and number]
        assert counted == []

        # And when requests go through both processes, either one's scrape sums the two: its own
        # counts at once, the other process's once it has written them (every FLUSH_SECONDS)
        statuses = [http_request(port, "GET", "/m/x")[0] for port in (first, first, first, second, second)]

        after_first, after_second = scrape_once_summed(first, 5), scrape_once_summed(second, 5)

    assert statuses == [200] * 5
    for after in (after_first, after_second):
        assert proxied_ok(after) == 5
        assert value(after, "sentinel_http_request_duration_seconds_count", route="/m/") == 5
        good_or_slow = value(after, "sentinel_slo_requests_total", outcome="good") + value(
            after, "sentinel_slo_requests_total", outcome="slow"
        )
        assert good_or_slow == 5
        assert value(after, "sentinel_gateway_decisions_total", decision="forwarded") == 5


def test_a_new_run_counts_from_zero(tmp_path: Path, upstream: str) -> None:
    # Given a run that proxied requests and ended (every process stopped)
    services.route_create(tenant=None, name="m", path_prefix="/m/", targets=[upstream], auth_mode="none")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "CACHE_KEY_PREFIX": key_prefix("metrics")}
    with web_process(**env) as port:
        for _ in range(3):
            assert http_request(port, "GET", "/m/x")[0] == 200
        assert proxied_ok(scrape_once_summed(port, 3)) == 3

    # When the next run starts on the same folder
    with web_process(**env) as port:
        # Then its counters start from zero: the last run's counts are gone, not added in
        assert proxied_ok(scrape(port)) == 0
        assert http_request(port, "GET", "/m/x")[0] == 200
        assert proxied_ok(scrape_once_summed(port, 1)) == 1


@contextlib.contextmanager
def web_processes_together(count: int, **env: str) -> Iterator[list[int]]:
    """`count` web processes started at the same moment (each a `manage.py serve`); yields their
    ports once every one answers."""
    ports = [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            command = python_command("manage.py", "serve", "--port", str(port))
            stack.enter_context(running_process(command, env=child_env(**env), name=f"web {port}"))
        for port in ports:
            wait_until(lambda port=port: http_request(port, "GET", "/health")[0] in (200, 503), timeout=60, what="web")
        yield ports


def test_processes_starting_together_or_later_keep_each_others_counts(tmp_path: Path, upstream: str) -> None:
    # Given the counts an earlier run left in the folder
    services.route_create(tenant=None, name="m", path_prefix="/m/", targets=[upstream], auth_mode="none")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "CACHE_KEY_PREFIX": key_prefix("metrics")}
    with web_process(**env) as port:
        http_request(port, "GET", "/m/x")

    # When three web processes start at once, and requests go through each
    with web_processes_together(3, **env) as ports:
        for index, port in enumerate(ports):
            for _ in range(index + 1):
                assert http_request(port, "GET", "/m/x")[0] == 200
        # Then no process emptied the folder under another: the sum is every request of this run
        assert proxied_ok(scrape_once_summed(ports[0], 6)) == 6

        # and a process that starts while they run joins the run without removing their counts
        with web_process(**env) as late:
            assert http_request(late, "GET", "/m/x")[0] == 200
            assert proxied_ok(scrape_once_summed(late, 7)) == 7

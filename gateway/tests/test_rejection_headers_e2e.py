"""Issue 8 item 7: every 429 and 503 Sentinel itself produces carries one consistent header set
(shared decision 3, README "Rejections"), checked on real web processes.

* 429 (the local burst bucket, the distributed window, a DRF throttle): ``Retry-After`` and the whole
  RateLimit set, coherent with each other and with the configured policy;
* 503 (shed, breaker open, no upstream, limiter unavailable, an unhealthy /health): ``Retry-After``,
  and no RateLimit field.

Three processes serve the module: one with routes for the burst, window, breaker and no-upstream
cases and a signup throttle of 2/hour; one under forced pressure (shed); one whose Redis is
unreachable with the limiter failing closed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway.tests.rawhttp import raw_upstream, response_bytes
from tests.support.net import free_port, http_request
from tests.support.processes import web_process
from tests.support.redis_keys import lasting_key_prefix

# Marked so pytest-django sets the test database up; the routes are committed once by the
# module's fixture, outside the tests' transactions, so the web processes see them.
pytestmark = pytest.mark.django_db

GENEROUS = {"BURST_CAPACITY": "100000", "REFILL_RATE": "100000", "BASE_RATE_LIMIT": "100000"}
RATELIMIT_FIELDS = {
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-remaining",
}
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Fleet:
    main: int
    shed: int
    limiter_down: int


def private_prefix() -> dict[str, str]:
    """Keys of these processes' own in the shared Redis (limiter, breaker, throttles)."""
    return {"CACHE_KEY_PREFIX": lasting_key_prefix("rejections")}


@pytest.fixture(scope="module")
def fleet(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[Fleet]:
    from gateway import services
    from gateway.models import Route, Upstream

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every forward is a 502
    ok = response_bytes(b"HTTP/1.1 200 OK", [], b"ok")
    with raw_upstream(ok) as upstream, django_db_blocker.unblock():  # type: ignore[attr-defined]
        target = [upstream.url]
        routes = [
            services.route_create(
                tenant=None,
                name="burst",
                path_prefix="/burst/",
                targets=target,
                auth_mode="none",
                burst_capacity=2,
                refill_rate=0.1,
            ),
            # Anonymous callers are economy tenants: half of 4 per minute.
            services.route_create(
                tenant=None, name="window", path_prefix="/window/", targets=target, auth_mode="none", base_rate_limit=4
            ),
            services.route_create(tenant=None, name="broken", path_prefix="/broken/", targets=[dead], auth_mode="none"),
            services.route_create(tenant=None, name="empty", path_prefix="/empty/", targets=target, auth_mode="none"),
            services.route_create(tenant=None, name="any", path_prefix="/any/", targets=target, auth_mode="none"),
        ]
        # The admin's inline lets an operator remove every target: such a route answers 503.
        routes[3].route_targets.all().delete()
        main_env = {
            **GENEROUS,
            **private_prefix(),
            "GATEWAY_FORCED_PRESSURE": "0",
            "BREAKER_CONSECUTIVE_FAILURES": "2",
            "BREAKER_COOLDOWN_MS": "60000",
            "SIGNUP_RATE": "2/hour",
        }
        dead_redis = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "RATE_LIMIT_FAIL_MODE": "closed"}
        try:
            with (
                web_process(**main_env) as main,
                web_process(**GENEROUS, **private_prefix(), GATEWAY_FORCED_PRESSURE="95") as shed,
                web_process(**GENEROUS, **dead_redis) as limiter_down,
            ):
                yield Fleet(main, shed, limiter_down)
        finally:
            Route.objects.filter(pk__in=[route.pk for route in routes]).delete()
            Upstream.objects.filter(url__in=[upstream.url, dead]).delete()


def first_refusal(send: Callable[[], Answer], status: int, attempts: int = 12) -> Answer:
    """Sends until the answer has ``status``; fails if it never comes."""
    answers = []
    for _ in range(attempts):
        answer = send()
        if answer[0] == status:
            return answer
        answers.append(answer[0])
    pytest.fail(f"no {status} in {attempts} attempts: {answers}")


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def assert_429_set(headers: dict[str, str], *, policy: str, quota: int, window_s: int) -> None:
    """The whole set, coherent: one policy named everywhere, nothing left, Retry-After >= Reset."""
    assert RATELIMIT_FIELDS | {"retry-after"} <= headers.keys(), headers
    retry_after, reset = int(headers["retry-after"]), int(headers["ratelimit-reset"])
    assert 1 <= retry_after <= 3600
    assert 0 <= reset <= retry_after
    assert headers["ratelimit-limit"] == str(quota)
    assert headers["ratelimit-remaining"] == headers["x-ratelimit-remaining"] == "0"
    assert headers["ratelimit-policy"] == f'"{policy}";q={quota};w={window_s}'
    assert headers["ratelimit"] == f'"{policy}";r=0;t={reset}'


def assert_503_set(headers: dict[str, str]) -> int:
    """Retry-After in whole seconds (>= 1) and no quota fields; returns Retry-After."""
    assert "retry-after" in headers, headers
    assert re.fullmatch(r"[1-9][0-9]*", headers["retry-after"]), headers["retry-after"]
    assert not RATELIMIT_FIELDS & headers.keys(), headers
    return int(headers["retry-after"])


# --- 429s -------------------------------------------------------------------------------------


def test_the_local_burst_bucket_429_carries_the_whole_set(fleet: Fleet) -> None:
    # Given a route whose bucket holds 2 and refills 0.1 per second (empty to full: 20 s)
    # When a client sends faster than that
    _, headers, body = first_refusal(lambda: http_request(fleet.main, "GET", "/burst/x"), 429)

    # Then the 429 states the burst policy like the window's 429 states its own
    assert error_code(body) == "rate_limited"
    assert_429_set(headers, policy="burst", quota=2, window_s=20)
    # And Retry-After is the time for one token (10 s at 0.1/s), not the whole refill
    assert 1 <= int(headers["retry-after"]) <= 10


def test_the_distributed_window_429_carries_the_whole_set(fleet: Fleet) -> None:
    _, headers, body = first_refusal(lambda: http_request(fleet.main, "GET", "/window/x"), 429)

    assert error_code(body) == "rate_limited"
    assert_429_set(headers, policy="window", quota=2, window_s=60)


def test_an_admitted_request_keeps_the_window_headers_without_retry_after(fleet: Fleet) -> None:
    status, headers, _ = http_request(fleet.main, "GET", "/any/x")

    assert status == 200
    assert headers.keys() >= RATELIMIT_FIELDS
    assert "retry-after" not in headers
    assert headers["ratelimit-policy"] == '"window";q=50000;w=60'


def test_the_signup_throttle_429_carries_the_whole_set(fleet: Fleet) -> None:
    # Given SIGNUP_RATE=2/hour: DRF counts every attempt, valid or not
    def signup() -> Answer:
        return http_request(
            fleet.main, "POST", "/auth/signup", body=b"{}", headers={"Content-Type": "application/json"}
        )

    _, headers, body = first_refusal(signup, 429)

    assert error_code(body) == "too_many_requests"
    assert_429_set(headers, policy="signup", quota=2, window_s=3600)
    assert json.loads(body)["error"]["details"] == {"retry_after": int(headers["retry-after"])}


# --- 503s -------------------------------------------------------------------------------------


def test_the_breaker_open_503_carries_retry_after(fleet: Fleet) -> None:
    _, headers, body = first_refusal(lambda: http_request(fleet.main, "GET", "/broken/x"), 503)

    assert error_code(body) == "breaker_open"
    # What is left of the 60 s cooldown, never more
    assert assert_503_set(headers) <= 60


def test_the_no_upstream_503_carries_retry_after(fleet: Fleet) -> None:
    status, headers, body = http_request(fleet.main, "GET", "/empty/x")

    assert (status, error_code(body)) == (503, "no_upstream")
    assert assert_503_set(headers) == 30


def test_the_shed_503_carries_retry_after(fleet: Fleet) -> None:
    status, headers, body = http_request(fleet.shed, "GET", "/any/x")

    assert (status, error_code(body)) == (503, "shed")
    assert assert_503_set(headers) >= 1


def test_the_limiter_unavailable_503_carries_retry_after(fleet: Fleet) -> None:
    status, headers, body = http_request(fleet.limiter_down, "GET", "/any/x")

    assert (status, error_code(body)) == (503, "limiter_unavailable")
    assert assert_503_set(headers) == 1


def test_an_unhealthy_health_check_503_carries_retry_after(fleet: Fleet) -> None:
    # Redis is down for this process: a critical component, so /health answers 503
    status, headers, _ = http_request(fleet.limiter_down, "GET", "/health")

    assert status == 503
    assert assert_503_set(headers) == 5

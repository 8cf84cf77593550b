"""The failed-login limiter's sliding window, on both stores, with a clock the test moves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from django.core.cache.backends.locmem import LocMemCache
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.test import APIClient

from accounts.login_limiter import CacheFailureLog, FailureLog, LoginLimiter, RedisFailureLog
from accounts.models import User
from tests.support.cast import PASSWORD
from tests.support.net import free_port
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

WINDOW = 900.0
# 10:14:50 on some day: ten seconds before a clock-aligned 15-minute boundary (10:15:00).
BEFORE_BOUNDARY = 1_700_000_100.0 - 1_700_000_100.0 % WINDOW + WINDOW - 10


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["locmem", "redis"])
def log(request: pytest.FixtureRequest) -> Iterator[FailureLog]:
    """The embedded store (a local-memory cache) and the production one (a real Redis)."""
    if request.param == "locmem":
        yield CacheFailureLog(LocMemCache(f"login-test-{uuid.uuid4().hex}", {}))
        return
    client = redis.Redis.from_url(require_redis())
    prefix = f"{key_prefix('login')}:"
    yield RedisFailureLog(client, lambda key: prefix + key)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def limiter_on(log: FailureLog, clock: FakeClock) -> LoginLimiter:
    return LoginLimiter(log, per_username=5, per_ip=20, window=WINDOW, clock=clock)


def fail(limiter: LoginLimiter, clock: FakeClock, at: float, username: str = "alice", ip: str = "203.0.113.9") -> None:
    clock.now = at
    limiter.failure(username=username, ip=ip)


def test_failures_straddling_a_window_boundary_are_all_counted(log: FailureLog) -> None:
    # Given three failures just before a clock-aligned boundary and two just after
    clock = FakeClock(BEFORE_BOUNDARY)
    limiter = limiter_on(log, clock)
    for offset in (0, 3, 6, 12, 15):
        fail(limiter, clock, BEFORE_BOUNDARY + offset)

    # When the sixth try comes, still after the boundary
    clock.now = BEFORE_BOUNDARY + 16
    lockout = limiter.lockout(username="alice", ip="198.51.100.1")

    # Then it is refused until the first failure is 15 minutes old
    assert lockout is not None
    assert lockout.subject == "username"
    assert lockout.retry_after == 900 - 16


def test_retry_after_is_the_time_until_the_oldest_failure_leaves(log: FailureLog) -> None:
    clock = FakeClock(BEFORE_BOUNDARY)
    limiter = limiter_on(log, clock)
    for offset in (0, 100, 200, 300, 400):
        fail(limiter, clock, BEFORE_BOUNDARY + offset)

    clock.now = BEFORE_BOUNDARY + 859.2
    assert limiter.lockout(username="ALICE ", ip="x").retry_after == 41  # type: ignore[union-attr]

    # Exactly 15 minutes after the oldest failure it leaves the window: four remain, one try opens.
    clock.now = BEFORE_BOUNDARY + WINDOW
    assert limiter.lockout(username="alice", ip="x") is None
    fail(limiter, clock, clock.now)
    assert limiter.lockout(username="alice", ip="x").retry_after == 100  # type: ignore[union-attr]


def test_more_failures_than_the_limit_wait_for_the_limit_th_newest(log: FailureLog) -> None:
    # Concurrent requests can all pass the check before any is recorded: seven failures land.
    clock = FakeClock(BEFORE_BOUNDARY)
    limiter = limiter_on(log, clock)
    for offset in range(7):
        fail(limiter, clock, BEFORE_BOUNDARY + offset * 10)

    clock.now = BEFORE_BOUNDARY + 61
    lockout = limiter.lockout(username="alice", ip="x")

    # Below the limit again once three have left: the third oldest (t+20) leaves at t+920.
    assert lockout is not None and lockout.retry_after == 920 - 61


def test_the_ip_limit_counts_across_usernames_and_a_success_clears_only_the_username(log: FailureLog) -> None:
    clock = FakeClock(BEFORE_BOUNDARY)
    limiter = limiter_on(log, clock)
    for n in range(19):
        fail(limiter, clock, BEFORE_BOUNDARY + n, username=f"guess{n}")
    clock.now = BEFORE_BOUNDARY + 30
    assert limiter.lockout(username="someone", ip="203.0.113.9") is None

    fail(limiter, clock, BEFORE_BOUNDARY + 31, username="alice")
    limiter.success(username="alice")

    lockout = limiter.lockout(username="alice", ip="203.0.113.9")
    assert lockout is not None
    assert (lockout.subject, lockout.retry_after) == ("ip", 900 - 31)
    assert limiter.lockout(username="alice", ip="198.51.100.7") is None


def test_a_subject_keeps_at_most_its_limit_of_times(log: FailureLog) -> None:
    clock = FakeClock(BEFORE_BOUNDARY)
    limiter = limiter_on(log, clock)
    for n in range(50):
        fail(limiter, clock, BEFORE_BOUNDARY + n)

    stored = log.recent(LoginLimiter.keys("alice", "203.0.113.9").values(), now=clock.now, window=WINDOW)

    assert [len(times) for times in stored.values()] == [5, 20]


def test_the_limiter_fails_open_when_redis_is_down() -> None:
    # No retries, as the site's clients (django-redis, built from the URL) make none: redis-py's
    # constructor alone retries a refused connection 3 times with backoff (~3.7 s a command).
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    limiter = LoginLimiter(RedisFailureLog(dead, str), per_username=1, per_ip=1, window=WINDOW)

    limiter.failure(username="alice", ip="x")
    limiter.success(username="alice")

    assert limiter.lockout(username="alice", ip="x") is None


@pytest.mark.django_db
def test_the_sixth_failed_login_is_told_to_wait_for_the_oldest_failure(alice: User) -> None:
    """Through the API on the configured cache (locmem, or Redis with REDIS_URL): 5 failures a
    few seconds apart, and the sixth try waits ~15 minutes, not until the next quarter hour."""
    client = APIClient(REMOTE_ADDR="203.0.113.50")
    for _ in range(5):
        assert client.post("/auth/token", {"username": "alice", "password": "x"}, format="json").status_code == 401

    locked = client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json")

    assert locked.status_code == 429
    assert 900 - 60 <= int(locked["Retry-After"]) <= 900

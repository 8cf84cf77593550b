"""The gateway's rate limiters: the local token bucket, the Redis sliding window and its in-memory twin.

Redis tests run against a real Redis (skipped when absent, failed when CI=true), each under its
own key prefix, deleted afterwards, with a fresh client per event loop. Time-based tests inject
the clock or wait on a condition with a deadline; none asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
import redis

from core.ratelimit_headers import LimitState
from gateway.engine.ratelimit import (
    SLIDING_WINDOW,
    BucketDecision,
    LimiterUnavailable,
    LocalTokenBuckets,
    MemoryWindowLimiter,
    RedisWindowLimiter,
    WindowDecision,
    bucket_limit,
    ratelimit_headers,
)
from gateway.engine.resp import RespClient, gateway_redis_client
from tests.support.net import free_port
from tests.support.processes import BASE_DIR
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

T = TypeVar("T")


@dataclass(frozen=True)
class RedisSpace:
    url: str
    prefix: str


@pytest.fixture
def space() -> Iterator[RedisSpace]:
    """A real Redis and a key prefix of this test's own; its keys are deleted afterwards."""
    url = require_redis()
    prefix = f"{key_prefix('ratelimit')}:"
    yield RedisSpace(url, prefix)
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def run_with_limiter(space: RedisSpace, scenario: Callable[[RedisWindowLimiter, RespClient], Awaitable[T]]) -> T:
    """Runs ``scenario`` on a fresh event loop with its own client (clients are bound to a loop)."""

    async def main() -> T:
        client = gateway_redis_client(space.url, timeout_s=2.0)
        try:
            return await scenario(RedisWindowLimiter(client, space.prefix), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


class FakeClock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- The distributed limiter against real Redis ---------------------------------------------

# Each child process: connect, report ready, wait for the go signal, then fire N concurrent checks
# on the same key and print every decision as JSON.
BURST_CHILD = """
import asyncio, json, sys
from redis.asyncio import Redis
from gateway.engine.ratelimit import RedisWindowLimiter
from gateway.engine.resp import gateway_redis_client

async def main(url, prefix, n):
    control = Redis.from_url(url)
    client = gateway_redis_client(url, timeout_s=10.0)
    limiter = RedisWindowLimiter(client, prefix)
    await control.incr(prefix + "barrier:ready")
    if await control.blpop([prefix + "barrier:go"], timeout=20) is None:
        sys.exit("no go signal within 20 s")
    decisions = await asyncio.gather(*(limiter.check("tenant-a:route-1", 100, 60_000) for _ in range(n)))
    print(json.dumps([[d.allowed, d.remaining, d.retry_after_ms] for d in decisions]))
    await client.aclose()
    await control.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_two_processes_bursting_together_get_exactly_the_limit(space: RedisSpace) -> None:
    # Given two gateway processes, each about to send 150 concurrent requests for one tenant
    # limited to 100 per minute, released at the same moment
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BURST_CHILD, space.url, space.prefix, "150"],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    control = redis.Redis.from_url(space.url)
    try:
        wait_until(
            lambda: int(control.get(f"{space.prefix}barrier:ready") or 0) == 2,
            timeout=30,
            what="both limiter processes to be ready",
        )
        # When both are released together
        control.rpush(f"{space.prefix}barrier:go", 1, 1)
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
    decisions = [decision for out, _ in outputs for decision in json.loads(out)]

    # Then exactly 100 of the 300 are admitted, each told a distinct remaining count from 99 down to 0
    admitted = [remaining for allowed, remaining, _ in decisions if allowed]
    refused = [(remaining, retry) for allowed, remaining, retry in decisions if not allowed]
    assert len(decisions) == 300
    assert [len(json.loads(out)) for out, _ in outputs] == [150, 150]  # both processes took part
    assert len(admitted) == 100
    assert sorted(admitted) == list(range(100))
    # And every refusal says no quota is left and when to retry
    assert all(remaining == 0 and retry > 0 for remaining, retry in refused)
    # And Redis holds one entry per admitted request, no more
    assert control.zcard(f"{space.prefix}tenant-a:route-1") == 100
    control.close()


async def _until_admitted(limiter: RedisWindowLimiter, key: str, timeout: float) -> WindowDecision:
    """Checks again every 10 ms until a request is admitted; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        decision = await limiter.check(key, 3, 500)
        if decision.allowed:
            return decision
        if time.monotonic() > deadline:
            pytest.fail(f"no request admitted within {timeout}s; last decision {decision}")
        await asyncio.sleep(0.01)


def test_the_window_slides_and_a_refused_client_gets_in_when_told(space: RedisSpace) -> None:
    # Given a limit of 3 per 500 ms, used up
    async def scenario(
        limiter: RedisWindowLimiter, _: RespClient
    ) -> tuple[list[WindowDecision], WindowDecision, float]:
        admitted = [await limiter.check("k", 3, 500) for _ in range(3)]
        # When a 4th request comes, and the client keeps trying
        asked_at = time.monotonic()
        refused = await limiter.check("k", 3, 500)
        await _until_admitted(limiter, "k", timeout=5)
        return admitted, refused, (time.monotonic() - asked_at) * 1000

    admitted, refused, waited_ms = run_with_limiter(space, scenario)

    assert [(d.allowed, d.remaining) for d in admitted] == [(True, 2), (True, 1), (True, 0)]
    # Then the 4th is refused with a retry delay within the window
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0 < refused.retry_after_ms <= 500
    assert refused.reset_ms == refused.retry_after_ms
    # And the next admission comes once the oldest entry has left, not before (5 ms for clock slew)
    assert waited_ms >= refused.retry_after_ms - 5


def test_rejections_are_not_stored_and_the_key_expires(space: RedisSpace) -> None:
    # Given a limit of 5 per minute
    async def scenario(limiter: RedisWindowLimiter, client: RespClient) -> tuple[list[WindowDecision], int, int]:
        # When a client sends 200 requests at once
        decisions = await asyncio.gather(*(limiter.check("flood", 5, 60_000) for _ in range(200)))
        key = f"{space.prefix}flood"
        return list(decisions), await client.execute("ZCARD", key), await client.execute("PTTL", key)

    decisions, members, ttl_ms = run_with_limiter(space, scenario)

    # Then 5 are admitted and Redis keeps only those 5, with a TTL of about one window
    assert sum(d.allowed for d in decisions) == 5
    assert members == 5
    assert 0 < ttl_ms <= 61_000


def test_an_idle_key_vanishes_after_its_window(space: RedisSpace) -> None:
    # Given one admitted request in a 200 ms window
    async def scenario(limiter: RedisWindowLimiter, _: RespClient) -> WindowDecision:
        return await limiter.check("idle", 10, 200)

    assert run_with_limiter(space, scenario).allowed
    # When nobody calls again, then the key disappears from Redis by itself
    with redis.Redis.from_url(space.url) as client:
        wait_until(lambda: not client.exists(f"{space.prefix}idle"), timeout=5, what="the idle key to expire")


def test_checks_keep_working_after_redis_forgets_the_script(space: RedisSpace) -> None:
    # Given a key with one admitted request
    async def scenario(
        limiter: RedisWindowLimiter, client: RespClient
    ) -> tuple[WindowDecision, WindowDecision, list[int]]:
        first = await limiter.check("k", 5, 60_000)
        # When Redis loses its script cache (restart, failover, SCRIPT FLUSH)
        await client.execute("SCRIPT", "FLUSH")
        second = await limiter.check("k", 5, 60_000)
        return first, second, await client.execute("SCRIPT", "EXISTS", SLIDING_WINDOW.sha)

    first, second, loaded = run_with_limiter(space, scenario)

    # Then the next check reloads the script transparently and still counts the first request
    assert (first.allowed, first.remaining) == (True, 4)
    assert (second.allowed, second.remaining) == (True, 3)
    assert loaded == [1]


def test_unreachable_redis_raises_limiter_unavailable_quickly() -> None:
    # Given a Redis URL where nothing listens
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        client = gateway_redis_client(url, timeout_s=0.5)
        try:
            # The outer deadline turns a hang (e.g. redis-py's default retries) into a failure
            await asyncio.wait_for(RedisWindowLimiter(client, "x:").check("k", 5, 1000), timeout=5)
        finally:
            await client.aclose()

    # When a check is made, then the caller gets LimiterUnavailable, caused by the connection error
    with pytest.raises(LimiterUnavailable) as raised:
        asyncio.run(scenario())
    assert isinstance(raised.value.__cause__, ConnectionError)


def test_a_redis_that_never_answers_raises_limiter_unavailable() -> None:
    # Given a server that accepts connections but never replies (a hung Redis)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"

        async def scenario() -> None:
            client = gateway_redis_client(url, timeout_s=0.3)
            try:
                await asyncio.wait_for(RedisWindowLimiter(client, "x:").check("k", 5, 1000), timeout=5)
            finally:
                await client.aclose()

        # When a check is made, then it gives up with LimiterUnavailable rather than waiting forever
        with pytest.raises(LimiterUnavailable):
            asyncio.run(scenario())


# --- The same contract, in memory and in Redis ------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_both_window_limiters_admit_the_limit_then_refuse(backend: str, request: pytest.FixtureRequest) -> None:
    # Given a limit of 3 per 10 s, in either implementation
    async def burst(limiter: RedisWindowLimiter | MemoryWindowLimiter) -> list[WindowDecision]:
        return [await limiter.check("k", 3, 10_000) for _ in range(5)]

    if backend == "memory":
        decisions = asyncio.run(burst(MemoryWindowLimiter()))
    else:
        decisions = run_with_limiter(request.getfixturevalue("space"), lambda limiter, _: burst(limiter))

    # When 5 requests arrive, then 3 are admitted counting down and 2 are refused with the same story
    assert [(d.allowed, d.remaining, d.limit) for d in decisions] == [
        (True, 2, 3),
        (True, 1, 3),
        (True, 0, 3),
        (False, 0, 3),
        (False, 0, 3),
    ]
    assert all(0 < d.retry_after_ms <= 10_000 for d in decisions[3:])
    assert all(d.retry_after_ms == 0 and 0 < d.reset_ms <= 10_000 for d in decisions[:3])


# --- The in-memory window limiter (embedded mode) -----------------------------------------------


def test_memory_limiter_slides_with_time() -> None:
    # Given a limit of 3 per second: requests at t=0, t=0.3 and t=0.4
    clock = FakeClock()
    limiter = MemoryWindowLimiter(clock=clock)

    def check(cost: int = 1) -> WindowDecision:
        return asyncio.run(limiter.check("k", 3, 1000, cost))

    for step in (0.0, 0.3, 0.1):
        clock.now += step
        assert check().allowed

    # When a 4th comes at t=0.5, then it is refused until the first leaves the window at t=1.0
    clock.now += 0.1
    refused = check()
    assert (refused.allowed, refused.retry_after_ms, refused.reset_ms) == (False, 500, 500)
    # And refusals are not counted: at t=1.0 exactly one slot is free again
    clock.now += 0.5
    assert check().allowed
    # And then one slot frees at t=1.3 and a second at t=1.4: a request costing 2 waits for both
    assert check().retry_after_ms == 300
    assert check(cost=2).retry_after_ms == 400
    clock.now += 0.3
    assert not check(cost=2).allowed
    clock.now += 0.1
    both = check(cost=2)
    assert (both.allowed, both.remaining) == (True, 0)


def test_memory_limiter_forgets_least_recently_used_keys() -> None:
    # Given room for two keys, each with its limit of 1 used up
    limiter = MemoryWindowLimiter(max_keys=2, clock=FakeClock())

    def allowed(key: str) -> bool:
        return asyncio.run(limiter.check(key, 1, 60_000)).allowed

    assert allowed("a") and allowed("b")
    assert not allowed("a")  # "a" is now the most recently used

    # When a third key arrives
    assert allowed("c")

    # Then the least recently used one ("b") was forgotten, and "a" is still limited
    assert len(limiter) == 2
    assert not allowed("a")
    assert allowed("b")


# --- The local token bucket -------------------------------------------------------------------


def test_bucket_allows_a_burst_then_refuses_until_refilled() -> None:
    # Given a bucket of 3 tokens refilling 1 per second
    buckets = LocalTokenBuckets()

    # When 4 requests arrive at once
    decisions = [buckets.take("tenant", 3, 1.0, now=0.0) for _ in range(4)]

    # Then 3 pass, counting down, and the 4th is told to come back in 1 s
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert decisions[3].retry_after_s == pytest.approx(1.0)
    # And half a second later it is still half a token short
    assert buckets.take("tenant", 3, 1.0, now=0.5).retry_after_s == pytest.approx(0.5)
    # And after a second it passes
    assert buckets.take("tenant", 3, 1.0, now=1.0).allowed


def test_bucket_refill_is_capped_at_capacity() -> None:
    # Given an emptied bucket of 3
    buckets = LocalTokenBuckets()
    for _ in range(3):
        buckets.take("tenant", 3, 10.0, now=0.0)

    # When it stays idle far longer than needed to refill
    later = [buckets.take("tenant", 3, 10.0, now=100.0) for _ in range(4)]

    # Then it holds only its capacity
    assert [d.allowed for d in later] == [True, True, True, False]


def test_bucket_refill_is_not_lost_to_float_rounding() -> None:
    # Given a 1-token bucket refilling 10/s, emptied at t=0.2
    buckets = LocalTokenBuckets()
    assert buckets.take("tenant", 1, 10.0, now=0.2).allowed

    # When the next request comes 0.1 s later (0.3 - 0.2 is 0.0999... in floating point)
    # Then the refilled token is there
    assert buckets.take("tenant", 1, 10.0, now=0.3).allowed


def test_bucket_without_refill_never_refills() -> None:
    # Given a bucket of 1 with a refill of 0
    buckets = LocalTokenBuckets()
    assert buckets.take("tenant", 1, 0.0, now=0.0).allowed

    # When time passes, then it stays empty and says there is no point retrying
    refused = buckets.take("tenant", 1, 0.0, now=3600.0)
    assert not refused.allowed
    assert math.isinf(refused.retry_after_s)


def test_bucket_applies_a_lowered_capacity_at_once() -> None:
    # Given a full bucket of 10
    buckets = LocalTokenBuckets()
    assert buckets.take("tenant", 10, 1.0, now=0.0).remaining == 9

    # When the tenant's burst capacity is lowered to 2, then only 2 more requests pass
    decisions = [buckets.take("tenant", 2, 1.0, now=0.0) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]


def test_buckets_forget_least_recently_used_tenants() -> None:
    # Given room for two tenants, both with their single token spent
    buckets = LocalTokenBuckets(max_keys=2)
    buckets.take("a", 1, 0.0, now=0.0)
    buckets.take("b", 1, 0.0, now=0.0)
    buckets.take("a", 1, 0.0, now=0.0)  # "a" is now the most recently used

    # When a third tenant arrives
    assert buckets.take("c", 1, 0.0, now=0.0).allowed

    # Then memory stays bounded: "b" was forgotten (starts full again), "a" is still empty
    assert len(buckets) == 2
    assert not buckets.take("a", 1, 0.0, now=0.0).allowed
    assert buckets.take("b", 1, 0.0, now=0.0).allowed


# --- Headers --------------------------------------------------------------------------------


def test_headers_of_an_admitted_request() -> None:
    # Given an admitted request with 42 of 100 left and a slot freeing in 16.001 s
    decision = WindowDecision(
        allowed=True, limit=100, remaining=42, reset_ms=16_001, retry_after_ms=0, window_ms=60_000
    )

    # Then the legacy trio, the IETF draft fields and no Retry-After are sent, seconds rounded up
    assert ratelimit_headers(decision) == [
        (b"x-ratelimit-remaining", b"42"),
        (b"ratelimit-limit", b"100"),
        (b"ratelimit-remaining", b"42"),
        (b"ratelimit-reset", b"17"),
        (b"ratelimit-policy", b'"window";q=100;w=60'),
        (b"ratelimit", b'"window";r=42;t=17'),
    ]


def test_headers_of_a_refused_request() -> None:
    # Given refusals with various delays
    def retry_after(retry_after_ms: int) -> bytes:
        decision = WindowDecision(False, 3, 0, retry_after_ms, retry_after_ms, 500)
        return dict(ratelimit_headers(decision, policy_name="tenant"))[b"retry-after"]

    # Then Retry-After is in whole seconds, rounded up, and never 0
    assert retry_after(2_500) == b"3"
    assert retry_after(1) == b"1"
    assert retry_after(0) == b"1"
    # And a sub-second window is announced as 1 s, under the policy's own name
    headers = dict(ratelimit_headers(WindowDecision(False, 3, 0, 400, 400, 500), policy_name="tenant"))
    assert headers[b"ratelimit-policy"] == b'"tenant";q=3;w=1'
    assert headers[b"ratelimit"] == b'"tenant";r=0;t=1'


def test_the_burst_bucket_states_its_policy_like_the_window() -> None:
    # Given a bucket of 20 refilling 10/s, refused with 0.25 s to wait for a token
    refused = BucketDecision(False, 0, 0.25)

    limit = bucket_limit(refused, 20, 10.0)

    # Then the policy is 20 per 2 s (empty to full), due again in 0.25 s
    assert limit == LimitState("burst", 20, 2, 0, 0.25)
    # And a bucket that never refills has no window to announce
    assert bucket_limit(BucketDecision(False, 0, math.inf), 5, 0.0).window_s == 0


def test_header_policy_names_are_quoted_safely() -> None:
    decision = WindowDecision(True, 10, 9, 1000, 0)

    # A quote in the name is escaped; a decision without a window omits w
    assert dict(ratelimit_headers(decision, 'a"b'))[b"ratelimit-policy"] == b'"a\\"b";q=10'
    # A name that cannot be a Structured Field string is refused
    with pytest.raises(ValueError, match="printable ASCII"):
        ratelimit_headers(decision, "caf\u00e9")

"""The circuit breaker (SPEC 2 step 8), against a real Redis and in memory; no Django involved.

Most tests run for both ``RedisBreaker`` and ``MemoryBreaker`` (the ``kind`` fixture). Each
Redis test gets its own key prefix and deletes its keys afterwards. The fleet-wide tests start
real OS processes. Cooldowns are 300 ms and waits poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from gateway.engine.breaker import (
    STATE_CODES,
    Breaker,
    BreakerConfig,
    BreakerState,
    BreakerUnavailable,
    MemoryBreaker,
    Permit,
    RedisBreaker,
    Transition,
)
from gateway.engine.resp import RespClient
from tests.support.net import free_port
from tests.support.redis_keys import key_prefix
from tests.support.services import redis_url_for_tests, require_redis

UPSTREAM = "http://orders.internal:8080"
FAST = BreakerConfig(failure_threshold=0.5, min_volume=10, cooldown_ms=300, half_open_max=5, window_ms=10_000)

T = TypeVar("T")


# --- helpers --------------------------------------------------------------------------------------


def fail_fast_client(url: str) -> RespClient:
    """Like the gateway's client: short timeouts, no retries."""
    return RespClient.from_url(url, timeout_s=2.0, connect_timeout_s=1.0)


@pytest.fixture(params=["redis", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require_redis()
    return str(request.param)


@contextlib.asynccontextmanager
async def new_breaker(kind: str, config: BreakerConfig = FAST, probe_ttl_ms: int = 30_000) -> AsyncIterator[Any]:
    """A fresh breaker of that kind; a Redis one under a unique prefix, whose keys are deleted after."""
    if kind == "memory":
        yield MemoryBreaker(config, probe_ttl_ms)
        return
    client = fail_fast_client(redis_url_for_tests())
    prefix = f"{key_prefix('breaker')}:"
    try:
        yield RedisBreaker(client, prefix, config, probe_ttl_ms)
    finally:
        await client.aclose()
        control = Redis.from_url(redis_url_for_tests())
        async for key in control.scan_iter(match=f"{prefix}*"):
            await control.delete(key)
        await control.aclose()


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str) -> T:
    """The async twin of testing.wait_until: polls ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


async def report(breaker: Breaker, upstream: str, outcomes: str) -> list[Transition]:
    """One request per letter, in order: 'F' a failure, 'S' a success. The transitions they caused."""
    transitions = []
    for letter in outcomes:
        permit = await breaker.acquire(upstream)
        assert permit.allowed, f"request refused before its outcome {letter!r}: {permit}"
        transition = await breaker.record(upstream, permit, success=letter == "S")
        if transition is not None:
            transitions.append(transition)
    return transitions


async def trip(breaker: Breaker, upstream: str = UPSTREAM) -> None:
    transitions = await report(breaker, upstream, "F" * FAST.min_volume)
    assert [(t.from_state, t.to_state) for t in transitions] == [("closed", "open")]


async def until_half_open(breaker: Breaker, upstream: str = UPSTREAM) -> BreakerState:
    async def half_open() -> BreakerState | None:
        state = await breaker.state(upstream)
        return state if state.state == "half_open" else None

    return await eventually(half_open, timeout=5, what="the cooldown to end")


class Upstream:
    """Stands in for the forwarder's target: counts the calls that reach it."""

    def __init__(self) -> None:
        self.calls = 0

    async def forward(self, breaker: Breaker, upstream: str, *, succeed: bool) -> Permit:
        permit = await breaker.acquire(upstream)
        if permit.allowed:
            self.calls += 1
            await breaker.record(upstream, permit, succeed)
        return permit


@contextlib.asynccontextmanager
async def transition_feed(breaker: Any) -> AsyncIterator[Callable[[int], Awaitable[list[dict[str, Any]]]]]:
    """Yields ``take(n)``: the next n transitions as the JSON a dashboard receives. For Redis, a real
    subscriber on the breaker's channel (subscribed before anything happens); in memory, a listener."""
    if isinstance(breaker, MemoryBreaker):
        seen: list[dict[str, Any]] = []
        breaker.listeners.append(lambda t: seen.append(json.loads(t.to_json())))

        async def take_seen(n: int) -> list[dict[str, Any]]:
            assert len(seen) >= n, seen
            return [seen.pop(0) for _ in range(n)]

        yield take_seen
        return
    subscriber = Redis.from_url(redis_url_for_tests())
    pubsub = subscriber.pubsub(ignore_subscribe_messages=False)
    await pubsub.subscribe(breaker.channel)
    confirmation = await pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "subscribe"

    async def take_published(n: int) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while len(received) < n and time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                received.append(json.loads(message["data"]))
        assert len(received) == n, f"received {received}, expected {n} transitions"
        return received

    try:
        yield take_published
    finally:
        await pubsub.aclose()
        await subscriber.aclose()


# --- closed: the failure ratio over a minimum volume ----------------------------------------------


def test_stays_closed_below_min_volume_even_when_every_request_fails(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given min_volume 10, when 9 requests out of 9 fail
            transitions = await report(breaker, UPSTREAM, "F" * 9)
            # Then the breaker stays closed, the failures counted, and the next request goes through
            assert transitions == []
            state = await breaker.state(UPSTREAM)
            assert (state.state, state.failures, state.total) == ("closed", 9, 9)
            assert (await breaker.acquire(UPSTREAM)).allowed

    asyncio.run(scenario())


def test_opens_when_the_ratio_reaches_the_threshold_over_min_volume(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given threshold 0.5 and min_volume 10, when 5 of 10 requests fail (interleaved)
            transitions = await report(breaker, UPSTREAM, "FS" * 5)
            # Then the 10th outcome opens it, fleet-wide state included
            assert [(t.upstream, t.from_state, t.to_state) for t in transitions] == [(UPSTREAM, "closed", "open")]
            state = await breaker.state(UPSTREAM)
            assert state.state == "open"
            assert state.opened_at_ms == transitions[0].at_ms
            assert STATE_CODES[state.state] == 1

    asyncio.run(scenario())


def test_does_not_open_below_the_threshold(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given threshold 0.5, when 4 of 10 requests fail, then 10 more succeed
            transitions = await report(breaker, UPSTREAM, "SFSFSFSFSS" + "S" * 10)
            # Then it never opens
            assert transitions == []
            state = await breaker.state(UPSTREAM)
            assert (state.state, state.failures, state.total) == ("closed", 4, 20)

    asyncio.run(scenario())


def test_failures_older_than_the_window_stop_counting(kind: str) -> None:
    async def scenario() -> None:
        config = BreakerConfig(min_volume=10, window_ms=500, cooldown_ms=300)
        async with new_breaker(kind, config) as breaker:
            # Given 9 failures
            await report(breaker, UPSTREAM, "F" * 9)

            # When the window moves past them
            async def forgotten() -> bool:
                return (await breaker.state(UPSTREAM)).total == 0

            await eventually(forgotten, timeout=5, what="the window to slide past the failures")
            # Then one more failure is 1 of 1, below min_volume: still closed
            assert await report(breaker, UPSTREAM, "F") == []
            assert (await breaker.state(UPSTREAM)).state == "closed"

    asyncio.run(scenario())


# --- open, then half-open ---------------------------------------------------------------------------


def test_open_refuses_at_once_then_turns_half_open_after_the_cooldown(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            upstream = Upstream()
            # Given an open breaker
            await trip(breaker)
            # When a request comes
            permit = await upstream.forward(breaker, UPSTREAM, succeed=True)
            # Then it is refused with the time left, and the upstream never sees it
            assert (permit.allowed, permit.state, permit.probe) == (False, "open", False)
            assert 0 < permit.retry_after_ms <= FAST.cooldown_ms
            assert upstream.calls == 0
            # And once the cooldown is over the breaker is half-open and the next request is a probe
            state = await until_half_open(breaker)
            assert STATE_CODES[state.state] == 2
            probe = await breaker.acquire(UPSTREAM)
            assert (probe.allowed, probe.state, probe.probe) == (True, "half_open", True)

    asyncio.run(scenario())


def test_half_open_admits_at_most_half_open_max_concurrent_probes(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given a half-open breaker
            await trip(breaker)
            await until_half_open(breaker)
            # When 20 requests arrive at once
            permits = await asyncio.gather(*(breaker.acquire(UPSTREAM) for _ in range(20)))
            # Then exactly half_open_max are probes; the others are refused like open
            assert sum(p.probe for p in permits) == FAST.half_open_max
            refused = [p for p in permits if not p.allowed]
            assert len(refused) == 20 - FAST.half_open_max
            assert all(p.retry_after_ms > 0 for p in refused)
            assert (await breaker.state(UPSTREAM)).probes_in_flight == FAST.half_open_max

    asyncio.run(scenario())


def _grab_probes(url: str, prefix: str, probe_ttl_ms: int, barrier: Any, results: Any) -> None:
    """In a child process: 20 concurrent acquire() at the barrier; report how many were probes.

    The probes are never recorded: when the process exits, its tokens are orphans."""

    async def grab() -> int:
        client = fail_fast_client(url)
        breaker = RedisBreaker(client, prefix, FAST, probe_ttl_ms)
        await breaker.load_scripts()
        # 20 connections open before the barrier, so the acquires race each other, not connects.
        await asyncio.gather(*(client.ping() for _ in range(20)))
        barrier.wait(timeout=30)
        permits = await asyncio.gather(*(breaker.acquire(UPSTREAM) for _ in range(20)))
        await client.aclose()
        return sum(p.probe for p in permits)

    results.put(asyncio.run(grab()))


def grab_probes_in_processes(breaker: RedisBreaker, processes: int) -> list[int]:
    """Runs ``processes`` real OS processes of _grab_probes, released together; their probe counts."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    url = redis_url_for_tests()
    children = [
        ctx.Process(target=_grab_probes, args=(url, breaker.prefix, breaker.probe_ttl_ms, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        counts = [results.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0] * processes
    return counts


def test_probe_limit_holds_across_processes() -> None:
    require_redis()

    async def scenario() -> None:
        async with new_breaker("redis") as breaker:
            # Given a breaker that is half-open for the whole fleet
            await trip(breaker)
            await until_half_open(breaker)
            # When two gateway processes each fire 20 requests at the same moment
            counts = await asyncio.to_thread(grab_probes_in_processes, breaker, 2)
            # Then exactly half_open_max probes went out in total
            assert sum(counts) == FAST.half_open_max, counts

    asyncio.run(scenario())


def test_probe_success_closes_and_every_listener_hears_it(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker, transition_feed(breaker) as take:
            # Given a half-open breaker, watched by a subscriber from the start
            await trip(breaker)
            await until_half_open(breaker)
            probe = await breaker.acquire(UPSTREAM)
            # When the probe succeeds
            transition = await breaker.record(UPSTREAM, probe, True)
            # Then the breaker is closed with an empty window and requests flow again
            assert transition is not None
            assert (transition.from_state, transition.to_state) == ("half_open", "closed")
            assert await breaker.state(UPSTREAM) == BreakerState("closed", 0, 0, None, 0)
            assert (await breaker.acquire(UPSTREAM)).state == "closed"
            # And the subscriber received every transition, the last one exactly as returned
            events = await take(3)
            assert [(e["from_state"], e["to_state"]) for e in events] == [
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed"),
            ]
            assert {e["upstream"] for e in events} == {UPSTREAM}
            assert Transition.from_json(json.dumps(events[-1])) == transition

    asyncio.run(scenario())


def test_probe_failure_reopens_with_a_new_cooldown(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given a half-open breaker, first opened at opened_at
            await trip(breaker)
            first_opened_at = (await until_half_open(breaker)).opened_at_ms
            assert first_opened_at is not None
            probe = await breaker.acquire(UPSTREAM)
            # When the probe fails
            transition = await breaker.record(UPSTREAM, probe, False)
            # Then it is open again, its cooldown counted from now
            assert transition is not None
            assert (transition.from_state, transition.to_state) == ("half_open", "open")
            state = await breaker.state(UPSTREAM)
            assert state.state == "open"
            assert state.opened_at_ms == transition.at_ms
            assert transition.at_ms >= first_opened_at + FAST.cooldown_ms
            assert state.probes_in_flight == 0
            refused = await breaker.acquire(UPSTREAM)
            assert (refused.allowed, refused.state) == (False, "open")
            assert refused.retry_after_ms > 0

    asyncio.run(scenario())


def test_probe_tokens_of_a_dead_process_expire(kind: str) -> None:
    async def scenario() -> None:
        probe_ttl_ms = 1000
        async with new_breaker(kind, probe_ttl_ms=probe_ttl_ms) as breaker:
            # Given a half-open breaker
            await trip(breaker)
            await until_half_open(breaker)
            # When a process takes every probe token and dies without reporting
            taken_at = time.monotonic()
            if kind == "redis":
                grabbed = sum(await asyncio.to_thread(grab_probes_in_processes, breaker, 1))
            else:  # one process: the "dead" requests are tasks that never report
                grabbed = sum(p.probe for p in await asyncio.gather(*(breaker.acquire(UPSTREAM) for _ in range(20))))
            assert grabbed == FAST.half_open_max

            # Then, once the tokens expire, a new probe is admitted
            async def probe_admitted() -> Permit | None:
                permit = await breaker.acquire(UPSTREAM)
                return permit if permit.probe else None

            probe = await eventually(probe_admitted, timeout=10, what="orphaned probe tokens to expire")
            # (less 10 ms: the clocks count whole milliseconds)
            assert time.monotonic() - taken_at >= (probe_ttl_ms - 10) / 1000
            # And its success closes the breaker as usual
            assert await breaker.record(UPSTREAM, probe, True) is not None
            assert (await breaker.state(UPSTREAM)).state == "closed"

    asyncio.run(scenario())


# --- stale permits, reset, states -------------------------------------------------------------------


def test_a_late_failure_from_before_a_reclose_does_not_count(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given a slow request admitted while closed
            slow = await breaker.acquire(UPSTREAM)
            # And meanwhile the breaker opened, probed and closed again
            await trip(breaker)
            await until_half_open(breaker)
            assert await breaker.record(UPSTREAM, await breaker.acquire(UPSTREAM), True) is not None
            # When the slow request finally fails
            transition = await breaker.record(UPSTREAM, slow, False)
            # Then the fresh window does not count it
            assert transition is None
            assert await breaker.state(UPSTREAM) == BreakerState("closed", 0, 0, None, 0)

    asyncio.run(scenario())


def test_a_late_probe_success_does_not_decide_a_later_half_open_period(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given two probes out on a half-open breaker
            await trip(breaker)
            await until_half_open(breaker)
            first, second = await breaker.acquire(UPSTREAM), await breaker.acquire(UPSTREAM)
            assert first.probe and second.probe
            # And the first failed, re-opening it, whose new cooldown has ended too
            assert await breaker.record(UPSTREAM, first, False) is not None
            assert (await breaker.state(UPSTREAM)).state == "open"
            await until_half_open(breaker)
            assert (await breaker.acquire(UPSTREAM)).probe
            # When the second probe, from the earlier period, finally reports a success
            late = await breaker.record(UPSTREAM, second, True)
            # Then it decides nothing: still half-open, the current probe still out
            assert late is None
            state = await breaker.state(UPSTREAM)
            assert (state.state, state.probes_in_flight) == ("half_open", 1)

    asyncio.run(scenario())


def test_reset_forces_closed(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given an open breaker
            await trip(breaker)
            # When an admin resets it
            transition = await breaker.reset(UPSTREAM)
            # Then it is closed, requests flow, and resetting a closed breaker is no transition
            assert transition is not None
            assert (transition.upstream, transition.from_state, transition.to_state) == (UPSTREAM, "open", "closed")
            assert await breaker.state(UPSTREAM) == BreakerState("closed", 0, 0, None, 0)
            assert (await breaker.acquire(UPSTREAM)).allowed
            assert await breaker.reset(UPSTREAM) is None
            assert await breaker.reset("http://never.seen") is None

    asyncio.run(scenario())


def test_states_reports_several_upstreams_at_once(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind) as breaker:
            # Given one open upstream, one with some failures, and one never used
            await trip(breaker, "http://a")
            await report(breaker, "http://b", "FFS")
            # When a dashboard asks for all three
            states = await breaker.states(["http://a", "http://b", "http://c"])
            # Then each has its own state
            assert states["http://a"].state == "open"
            assert states["http://a"].opened_at_ms is not None
            assert states["http://b"] == BreakerState("closed", 2, 3, None, 0)
            assert states["http://c"] == BreakerState("closed", 0, 0, None, 0)

    asyncio.run(scenario())


# --- Redis specifics -------------------------------------------------------------------------------


def test_redis_keys_carry_ttls() -> None:
    require_redis()

    async def scenario() -> None:
        async with new_breaker("redis") as breaker:
            # Given a breaker used in every state
            await report(breaker, "http://closed", "SF")
            await trip(breaker, "http://open")
            await until_half_open(breaker, "http://open")
            await breaker.acquire("http://open")
            # Then every key it wrote expires by itself
            control = Redis.from_url(redis_url_for_tests())
            keys = [key async for key in control.scan_iter(match=f"{breaker.prefix}*")]
            assert sorted(keys) == sorted(breaker.key_for(u).encode() for u in ("http://closed", "http://open"))
            for key in keys:
                assert await control.pttl(key) > 0, key
            await control.aclose()

    asyncio.run(scenario())


def test_redis_breaker_recovers_after_script_flush() -> None:
    require_redis()

    async def scenario() -> None:
        async with new_breaker("redis") as breaker:
            # Given a working breaker
            await report(breaker, UPSTREAM, "FFF")
            # When Redis forgets its scripts (restart, failover, SCRIPT FLUSH)
            await breaker.redis.execute("SCRIPT", "FLUSH")
            # Then every step still works, reloading the scripts
            await report(breaker, UPSTREAM, "F" * 7)
            assert (await breaker.state(UPSTREAM)).state == "open"
            await breaker.redis.execute("SCRIPT", "FLUSH")
            assert await breaker.reset(UPSTREAM) is not None

    asyncio.run(scenario())


def test_unreachable_redis_raises_breaker_unavailable() -> None:
    async def scenario() -> None:
        # Given a breaker whose Redis is not listening
        client = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0")
        breaker = RedisBreaker(client, "test:unreachable:", FAST)
        permit = Permit(True, "closed", False, 1, 0)
        try:
            # Then every call fails fast with BreakerUnavailable, so the gateway can fail open
            # (a deadline against hanging, not a latency assertion)
            async with asyncio.timeout(5):
                calls: list[Callable[[], Awaitable[object]]] = [
                    lambda: breaker.acquire(UPSTREAM),
                    lambda: breaker.record(UPSTREAM, permit, False),
                    lambda: breaker.states([UPSTREAM]),
                    lambda: breaker.reset(UPSTREAM),
                ]
                for call in calls:
                    with pytest.raises(BreakerUnavailable):
                        await call()
        finally:
            await client.aclose()

    asyncio.run(scenario())

"""The window and the breaker in one round trip (`gateway.engine.gate`), and the breaker's outcomes
recorded in batches, against a real Redis.

What a user would notice: the same admissions, refusals and breaker decisions as the two separate
calls made, a refused or shed request never taking a half-open probe token, and one command on
the wire where there were several. Commands are counted with Redis' MONITOR, filtered by this
test's own key prefix, so other clients of the same Redis do not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio import Redis

from gateway.engine.breaker import BreakerConfig, BreakerUnavailable, RedisBreaker
from gateway.engine.gate import GateUnavailable, RedisGate
from gateway.engine.ratelimit import LimiterUnavailable, RedisWindowLimiter
from gateway.engine.resp import RespClient
from tests.support.net import free_port
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

T = TypeVar("T")
UPSTREAM = "http://orders.internal:8080"
FAST = BreakerConfig(failure_threshold=0.5, min_volume=4, cooldown_ms=200, half_open_max=1, window_ms=10_000)


@pytest.fixture
def prefix() -> Iterator[str]:
    url = require_redis()
    prefix = f"{key_prefix('gate')}:"
    yield prefix
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def run(prefix: str, scenario: Callable[[RedisGate], Awaitable[T]], config: BreakerConfig = FAST) -> T:
    async def main() -> T:
        client = RespClient.from_url(require_redis(), timeout_s=2.0, connect_timeout_s=1.0)
        try:
            breaker = RedisBreaker(client, prefix, config, probe_ttl_ms=30_000)
            return await scenario(RedisGate(client, RedisWindowLimiter(client, prefix), breaker))
        finally:
            await client.aclose()

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def commands_seen(prefix: str) -> AsyncIterator[list[str]]:
    """The EVALSHA commands Redis runs meanwhile whose arguments name `prefix` (MONITOR)."""
    seen: list[str] = []
    marker = f"{prefix}end-of-watch"
    control = Redis.from_url(require_redis())
    ready, ended = asyncio.Event(), asyncio.Event()

    async def watch() -> None:
        async with control.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                text = command["command"]
                if marker in text:
                    ended.set()
                elif text.upper().startswith("EVALSHA") and prefix in text:
                    seen.append(text)

    watcher = asyncio.create_task(watch())
    probe = Redis.from_url(require_redis())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        # MONITOR is on once Redis answered it: a first marker seen means everything after is seen.
        while not ended.is_set():
            await probe.get(marker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), 0.2)
        ended.clear()
        yield seen
        # Everything sent before this last marker has been seen once the marker is.
        await probe.get(marker)
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await probe.aclose()
        await control.aclose()


async def trip(breaker: RedisBreaker) -> None:
    for _ in range(FAST.min_volume):
        permit = await breaker.acquire(UPSTREAM)
        await breaker.record(UPSTREAM, permit, success=False)
    assert (await breaker.state(UPSTREAM)).state == "open"


async def until_half_open(breaker: RedisBreaker) -> None:
    deadline = time.monotonic() + 5
    while (await breaker.state(UPSTREAM)).state != "half_open":
        assert time.monotonic() < deadline, "the cooldown did not end"
        await asyncio.sleep(0.02)


def test_the_gate_admits_like_the_window_and_hands_the_permit(prefix: str) -> None:
    async def scenario(gate: RedisGate) -> list[tuple[bool, int, bool | None]]:
        decisions = []
        for _ in range(4):
            gated = await gate.check("tenant:1", 3, 60_000, UPSTREAM)
            decisions.append((gated.window.allowed, gated.window.remaining, gated.permit and gated.permit.allowed))
        return decisions

    # Given a limit of 3, four requests: three admitted with a permit each, the fourth refused
    # by the window without asking the breaker.
    assert run(prefix, scenario) == [(True, 2, True), (True, 1, True), (True, 0, True), (False, 0, None)]


def test_a_new_limit_or_target_for_the_same_caller_is_asked_as_such(prefix: str) -> None:
    # The gate keeps each caller's encoded command: a changed limit (an operator's override) and
    # a request that wants no permit (shed) are other commands, never a kept one.
    async def scenario(gate: RedisGate) -> list[tuple[bool, int, bool]]:
        decisions = []
        for limit, target in ((2, UPSTREAM), (2, UPSTREAM), (2, UPSTREAM), (4, UPSTREAM), (4, None)):
            gated = await gate.check("tenant:1", limit, 60_000, target)
            decisions.append((gated.window.allowed, gated.window.remaining, gated.permit is not None))
        return decisions

    assert run(prefix, scenario) == [
        (True, 1, True), (True, 0, True), (False, 0, False), (True, 1, True), (True, 0, False)
    ]  # fmt: skip


def test_a_refused_or_shed_request_takes_no_probe_token(prefix: str) -> None:
    async def scenario(gate: RedisGate) -> tuple[Any, Any, Any, Any]:
        await trip(gate.breaker)
        await until_half_open(gate.breaker)
        # A window that is full: the one probe slot must not go to a refused request.
        await gate.limiter.check("full", 1, 60_000)
        refused = await gate.check("full", 1, 60_000, UPSTREAM)
        # A request the pressure step shed asks for no permit (target None), admitted or not.
        shed = await gate.check("other", 10, 60_000, None)
        probe = await gate.check("third", 10, 60_000, UPSTREAM)
        second = await gate.check("fourth", 10, 60_000, UPSTREAM)
        return refused, shed, probe, second

    refused, shed, probe, second = run(prefix, scenario)
    assert not refused.window.allowed and refused.permit is None
    assert shed.window.allowed and shed.permit is None
    # Then the one probe slot is still there for the first admitted request, and only for it.
    assert probe.permit is not None and probe.permit.allowed and probe.permit.probe
    assert second.permit is not None and not second.permit.allowed and second.permit.state == "half_open"


def test_the_gate_is_one_command_on_the_wire(prefix: str) -> None:
    async def scenario(gate: RedisGate) -> tuple[int, bool]:
        await gate.check("warm", 10, 60_000, UPSTREAM)  # loads the script: EVALSHA, LOAD, EVALSHA
        async with commands_seen(prefix) as seen:
            gated = await gate.check("tenant:1", 10, 60_000, UPSTREAM)
        return len(seen), bool(gated.permit and gated.permit.allowed)

    assert run(prefix, scenario) == (1, True)


def test_outcomes_of_one_loop_turn_are_one_command_counted_in_order(prefix: str) -> None:
    config = BreakerConfig(min_volume=10, cooldown_ms=60_000, consecutive_failures=3)

    async def scenario(gate: RedisGate) -> tuple[int, list[str], str]:
        breaker = gate.breaker
        permits = [await breaker.acquire(UPSTREAM) for _ in range(6)]
        await breaker.record(UPSTREAM, await breaker.acquire(UPSTREAM), success=True)  # scripts loaded
        async with commands_seen(prefix) as seen:
            # F F S F F F: the success ends the first streak, the last failure completes a streak of 3.
            outcomes = [False, False, True, False, False, False]
            transitions = await asyncio.gather(
                *(breaker.record(UPSTREAM, permit, ok) for permit, ok in zip(permits, outcomes, strict=True))
            )
        moved = [f"{t.from_state}->{t.to_state}" if t else "" for t in transitions]
        return len(seen), moved, (await breaker.state(UPSTREAM)).state

    count, moved, state = run(prefix, scenario, config)
    assert count == 1
    # Then only the outcome that completed the streak reports the transition, as one call each would.
    assert moved == ["", "", "", "", "", "closed->open"]
    assert state == "open"


def test_an_unreachable_redis_fails_both_steps() -> None:
    async def scenario() -> None:
        client = RespClient.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0, connect_timeout_s=0.5)
        try:
            gate = RedisGate(client, RedisWindowLimiter(client, "x:"), RedisBreaker(client, "x:", FAST))
            async with asyncio.timeout(5):  # against hanging, not a latency assertion
                with pytest.raises(GateUnavailable) as raised:
                    await gate.check("tenant", 10, 1000, UPSTREAM)
            assert isinstance(raised.value, LimiterUnavailable) and isinstance(raised.value, BreakerUnavailable)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_gate_works_after_redis_forgets_its_scripts(prefix: str) -> None:
    async def scenario(gate: RedisGate) -> bool:
        await gate.check("tenant", 10, 60_000, UPSTREAM)
        await gate.redis.execute("SCRIPT", "FLUSH")
        gated = await gate.check("tenant", 10, 60_000, UPSTREAM)
        return gated.window.allowed and gated.window.remaining == 8 and bool(gated.permit and gated.permit.allowed)

    assert run(prefix, scenario)

"""The breaker's consecutive-failures mode (the fraud brain's breaker, SPEC 6), in Redis and in
memory; the ratio mode's tests live in gateway/tests/test_engine_breaker.py and reuse nothing here."""

from __future__ import annotations

import asyncio

from gateway.engine.breaker import BreakerConfig
from gateway.tests.test_engine_breaker import kind, new_breaker, report, until_half_open

__all__ = ["kind"]  # the fixture, parametrised redis | memory

UPSTREAM = "grpc://brain.internal:50051"
STREAK = BreakerConfig(consecutive_failures=3, cooldown_ms=300, half_open_max=1)


def test_the_third_consecutive_failure_opens(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind, STREAK) as breaker:
            # Given two failures in a row, the breaker is still closed with a streak of 2
            assert await report(breaker, UPSTREAM, "FF") == []
            state = await breaker.state(UPSTREAM)
            assert (state.state, state.failures, state.total) == ("closed", 2, 0)
            # When the third fails
            transitions = await report(breaker, UPSTREAM, "F")
            # Then it opens and refuses the next call
            assert [(t.from_state, t.to_state) for t in transitions] == [("closed", "open")]
            permit = await breaker.acquire(UPSTREAM)
            assert (permit.allowed, permit.state) == (False, "open")
            assert (await breaker.state(UPSTREAM)).failures == 0  # the transition cleared the streak

    asyncio.run(scenario())


def test_a_success_ends_the_streak_and_the_ratio_never_trips(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind, STREAK) as breaker:
            # Given 30 calls, two of every three failing (a ratio the gateway's rule would trip on)
            transitions = await report(breaker, UPSTREAM, "FFS" * 10)
            # Then it never opens: no three failures came in a row
            assert transitions == []
            assert (await breaker.state(UPSTREAM)).state == "closed"

    asyncio.run(scenario())


def test_one_trial_call_after_the_cooldown_decides(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind, STREAK) as breaker:
            await report(breaker, UPSTREAM, "FFF")
            await until_half_open(breaker, UPSTREAM)
            # When two calls come after the cooldown, only one is let through (half_open_max=1)
            trial, other = await breaker.acquire(UPSTREAM), await breaker.acquire(UPSTREAM)
            assert (trial.allowed, trial.probe, other.allowed) == (True, True, False)
            # And its failure reopens at once (no new streak needed)
            reopened = await breaker.record(UPSTREAM, trial, success=False)
            assert reopened is not None and (reopened.from_state, reopened.to_state) == ("half_open", "open")
            await until_half_open(breaker, UPSTREAM)
            # Then a successful trial closes it, with a fresh streak: two failures do not reopen it
            trial = await breaker.acquire(UPSTREAM)
            closed = await breaker.record(UPSTREAM, trial, success=True)
            assert closed is not None and closed.to_state == "closed"
            assert await report(breaker, UPSTREAM, "FF") == []
            assert (await breaker.state(UPSTREAM)).state == "closed"

    asyncio.run(scenario())


def test_reset_clears_the_streak(kind: str) -> None:
    async def scenario() -> None:
        async with new_breaker(kind, STREAK) as breaker:
            await report(breaker, UPSTREAM, "FF")
            await breaker.reset(UPSTREAM)
            # A streak of 2 before the reset plus 1 after is not 3 in a row
            assert await report(breaker, UPSTREAM, "F") == []
            assert (await breaker.state(UPSTREAM)).failures == 1

    asyncio.run(scenario())


def test_config_refuses_a_negative_streak() -> None:
    try:
        BreakerConfig(consecutive_failures=-1)
    except ValueError as exc:
        assert "consecutive_failures" in str(exc)
    else:
        raise AssertionError("a negative consecutive_failures was accepted")

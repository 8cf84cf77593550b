"""The brain client (fraud.engine.client) against a real gRPC server (tests.support.fake_brain)
scripted to answer, fail, lag or stop, behind a real breaker. No Django. One event loop per test
(grpc.aio binds its channel to the loop; the client is closed before the loop ends)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import grpc
import pytest

from fraud.engine.client import FAILURE_LOG_INTERVAL_S, BrainClient
from fraud.engine.transaction import BrainUnavailable, History, Reason, TransactionIn
from fraud.protos import fraud_pb2
from gateway.engine.breaker import BreakerConfig, MemoryBreaker, RedisBreaker
from gateway.engine.resp import RespClient
from tests.support.fake_brain import FakeBrain, fake_brain
from tests.support.net import free_port

TX = TransactionIn("tx-1", "u-1", Decimal("12.50"), "EUR", "m-1", "FR")
HISTORY = History(count_total=3, count_1h=2, amount_1h=25.0, log_amount_mean=2.5, country_seen=True)
CONFIG = BreakerConfig(consecutive_failures=3, cooldown_ms=60_000, half_open_max=1)


def run(brain: FakeBrain, scenario: Callable[[BrainClient], Awaitable[None]], **options: object) -> list[str]:
    """Runs `scenario` with a client of `brain` on a fresh loop; the outcomes it observed."""
    outcomes: list[str] = []

    async def main() -> None:
        client = BrainClient(
            brain.address,
            timeout_ms=int(options.get("timeout_ms", 1000)),  # type: ignore[call-overload]
            breaker=options.get("breaker") or MemoryBreaker(CONFIG),  # type: ignore[arg-type]
            observe=lambda outcome, seconds: outcomes.append(outcome),
        )
        try:
            await scenario(client)
        finally:
            await client.close()

    asyncio.run(main())
    return outcomes


async def fail_open_code(client: BrainClient) -> str:
    with pytest.raises(BrainUnavailable) as caught:
        await client.score(TX, HISTORY, tenant_uuid="t-1", created_at_ms=1)
    return caught.value.code


def test_a_score_with_its_reasons_and_the_request_the_brain_received() -> None:
    with fake_brain(score=0.87, model_version="m-7") as brain:

        async def scenario(client: BrainClient) -> None:
            score = await client.score(TX, HISTORY, tenant_uuid="t-1", created_at_ms=1_790_000_000_000)
            assert (score.score, score.model_version) == (0.87, "m-7")
            assert score.reasons == (Reason("amount_vs_habit", "scripted reason", 1.5),)

        assert run(brain, scenario) == ["ok"]
        sent = brain.received[0]
        assert (sent.transaction_id, sent.tenant, sent.user_id, sent.amount, sent.currency) == (
            "tx-1", "t-1", "u-1", 12.5, "EUR",
        )  # fmt: skip
        assert (sent.merchant, sent.country, sent.created_at_ms) == ("m-1", "FR", 1_790_000_000_000)
        assert (sent.history.count_total, sent.history.amount_1h, sent.history.country_seen) == (3, 25.0, True)


def test_the_third_failure_opens_and_the_fourth_call_never_reaches_the_brain() -> None:
    with fake_brain() as brain:
        brain.mode = "fail"

        async def scenario(client: BrainClient) -> None:
            assert [await fail_open_code(client) for _ in range(3)] == ["brain_unavailable"] * 3
            assert await fail_open_code(client) == "breaker_open"  # at once: the brain is not called

        assert run(brain, scenario) == ["brain_unavailable"] * 3 + ["breaker_open"]
        assert len(brain.received) == 3


def test_a_success_between_failures_keeps_the_breaker_closed() -> None:
    with fake_brain() as brain:

        async def scenario(client: BrainClient) -> None:
            for _ in range(3):
                brain.mode = "fail"
                await fail_open_code(client)
                await fail_open_code(client)
                brain.mode = "ok"
                await client.score(TX, HISTORY, tenant_uuid="t", created_at_ms=1)

        assert "breaker_open" not in run(brain, scenario)


def test_a_late_brain_is_a_timeout_at_the_deadline() -> None:
    with fake_brain() as brain:
        brain.mode, brain.delay_ms = "slow", 2000

        async def scenario(client: BrainClient) -> None:
            started = time.perf_counter()
            assert await fail_open_code(client) == "brain_timeout"
            assert 0.05 <= time.perf_counter() - started < 0.5

        assert run(brain, scenario, timeout_ms=50) == ["brain_timeout"]


def test_a_stopped_brain_is_unavailable_and_a_bad_reply_an_error() -> None:
    with fake_brain(score=1.5) as brain:

        async def scenario(client: BrainClient) -> None:
            assert await fail_open_code(client) == "brain_error"  # 1.5 is no probability
            brain.stop()
            assert await fail_open_code(client) == "brain_unavailable"

        assert run(brain, scenario) == ["brain_error", "brain_unavailable"]


def test_without_its_redis_the_breaker_is_bypassed_and_the_brain_still_scores() -> None:
    dead_redis = RespClient.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, connect_timeout_s=0.2)
    breaker = RedisBreaker(dead_redis, "never:", CONFIG)
    with fake_brain(score=0.4) as brain:

        async def scenario(client: BrainClient) -> None:
            lost: list[int] = []
            client.on_breaker_unavailable = lambda: lost.append(1)
            assert (await client.score(TX, HISTORY, tenant_uuid="t", created_at_ms=1)).score == 0.4
            assert lost  # counted
            await dead_redis.aclose()

        assert run(brain, scenario, breaker=breaker) == ["ok"]


class FailingBrain(FakeBrain):
    """The scripted brain, failing every call with `status` and `details` (as the real brain's
    INTERNAL, INVALID_ARGUMENT or a proxy's RESOURCE_EXHAUSTED would) while `status` is set."""

    status: grpc.StatusCode | None = None
    details = ""

    def Score(self, request: fraud_pb2.Transaction, context: grpc.ServicerContext) -> fraud_pb2.ScoreReply:
        if self.status is not None:
            context.abort(self.status, self.details)
        return super().Score(request, context)


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sentinel.fraud" and r.levelno == logging.WARNING]


PATIENT = BreakerConfig(consecutive_failures=1000, cooldown_ms=60_000, half_open_max=1)  # never opens here


def test_a_brain_error_is_logged_with_its_grpc_status_and_details(caplog: pytest.LogCaptureFixture) -> None:
    brain = FailingBrain().start()
    try:
        brain.status, brain.details = grpc.StatusCode.INTERNAL, "the brain failed to score this transaction"

        async def scenario(client: BrainClient) -> None:
            assert await fail_open_code(client) == "brain_error"

        with caplog.at_level(logging.WARNING, logger="sentinel.fraud"):
            assert run(brain, scenario) == ["brain_error"]
    finally:
        brain.stop()

    [line] = failure_lines(caplog)
    assert line.grpc_status == "INTERNAL"  # type: ignore[attr-defined]
    assert line.grpc_details == "the brain failed to score this transaction"  # type: ignore[attr-defined]
    assert line.fail_open == "brain_error"  # type: ignore[attr-defined]
    assert "INTERNAL: the brain failed to score this transaction" in line.getMessage()


def test_failures_are_logged_once_per_status_per_interval_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    brain = FailingBrain().start()
    now = [1000.0]
    try:

        async def scenario(client: BrainClient) -> None:
            client.failures.clock = lambda: now[0]
            brain.status, brain.details = grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls"
            for _ in range(5):
                await fail_open_code(client)
            brain.status = None
            brain.mode = "fail"  # UNAVAILABLE: a status of its own, logged although the other is quiet
            await fail_open_code(client)
            await fail_open_code(client)
            now[0] += FAILURE_LOG_INTERVAL_S - 0.001
            brain.status = grpc.StatusCode.RESOURCE_EXHAUSTED
            await fail_open_code(client)  # still within the interval: counted, not logged
            now[0] += 0.001
            await fail_open_code(client)

        with caplog.at_level(logging.WARNING, logger="sentinel.fraud"):
            outcomes = run(brain, scenario, breaker=MemoryBreaker(PATIENT))
    finally:
        brain.stop()

    assert outcomes.count("brain_error") == 7 and outcomes.count("brain_unavailable") == 2
    lines = [(r.grpc_status, r.left_out) for r in failure_lines(caplog)]  # type: ignore[attr-defined]
    assert lines == [("RESOURCE_EXHAUSTED", 0), ("UNAVAILABLE", 0), ("RESOURCE_EXHAUSTED", 5)]
    assert "5 more RESOURCE_EXHAUSTED left out" in failure_lines(caplog)[-1].getMessage()


def test_timeouts_are_not_logged_and_a_reply_that_is_no_score_is(caplog: pytest.LogCaptureFixture) -> None:
    with fake_brain(score=1.5) as brain:

        async def scenario(client: BrainClient) -> None:
            assert await fail_open_code(client) == "brain_error"
            brain.mode, brain.delay_ms = "slow", 2000
            assert await fail_open_code(client) == "brain_timeout"

        with caplog.at_level(logging.WARNING, logger="sentinel.fraud"):
            assert run(brain, scenario, timeout_ms=50) == ["brain_error", "brain_timeout"]

    [line] = failure_lines(caplog)
    assert line.grpc_status == "OK"  # type: ignore[attr-defined]
    assert "not a score" in line.grpc_details  # type: ignore[attr-defined]


def _tx(n: int) -> TransactionIn:
    return TransactionIn(f"t-{n}", "u-1", Decimal("12.50"), "EUR", "m-1", "FR")


def test_transactions_waiting_behind_a_call_go_together_in_one_score_many() -> None:
    with fake_brain(score=0.3) as brain:
        brain.mode, brain.delay_ms = "slow", 200

        async def scenario(client: BrainClient) -> None:
            first = asyncio.create_task(client.score(_tx(0), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            await asyncio.sleep(0.05)  # the first call is out: the next ten wait for it
            rest = [client.score(_tx(n), HISTORY, tenant_uuid="t-1", created_at_ms=1) for n in range(1, 11)]
            scores = await asyncio.gather(first, *rest)
            assert [score.score for score in scores] == [0.3] * 11

        assert run(brain, scenario) == ["ok"] * 11
        # Then one Score call, then one ScoreMany of the ten, in the order they were handed over
        assert brain.calls == [1, 10]
        assert [tx.transaction_id for tx in brain.received] == [f"t-{n}" for n in range(11)]


def test_an_invalid_transaction_of_a_batch_fails_open_alone() -> None:
    with fake_brain(score=0.3) as brain:
        brain.mode, brain.delay_ms, brain.invalid = "slow", 100, {"t-2"}

        async def scenario(client: BrainClient) -> None:
            first = asyncio.create_task(client.score(_tx(0), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            await asyncio.sleep(0.03)
            rest = [client.score(_tx(n), HISTORY, tenant_uuid="t-1", created_at_ms=1) for n in range(1, 4)]
            outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
            codes = [o.code if isinstance(o, BrainUnavailable) else "ok" for o in outcomes]
            assert codes == ["ok", "ok", "brain_error", "ok"]

        run(brain, scenario)
        assert brain.calls == [1, 3]


def test_a_failed_batch_is_one_breaker_failure_and_each_of_its_transactions_fails_open() -> None:
    with fake_brain() as brain:
        brain.mode = "fail"

        async def scenario(client: BrainClient) -> None:
            codes = [await fail_open_code(client)]  # one call, one failure
            calls = [client.score(_tx(n), HISTORY, tenant_uuid="t-1", created_at_ms=1) for n in range(5)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            codes += [o.code for o in outcomes if isinstance(o, BrainUnavailable)]
            # The five, handed over together, went as one ScoreMany: the second failure, not six
            assert codes == ["brain_unavailable"] * 6
            assert await fail_open_code(client) == "brain_unavailable"  # the third opens it
            assert await fail_open_code(client) == "breaker_open"

        run(brain, scenario)
        assert brain.calls == [1, 5, 1]


def test_a_transaction_waiting_behind_a_slow_call_is_answered_at_its_own_deadline() -> None:
    with fake_brain() as brain:
        brain.mode, brain.delay_ms = "slow", 3000

        async def scenario(client: BrainClient) -> None:
            first = asyncio.create_task(fail_open_code(client))
            await asyncio.sleep(0.1)
            started = time.perf_counter()
            assert await fail_open_code(client) == "brain_timeout"
            # Its deadline (1 s) runs from when it was handed over, its 0.9 s of waiting for the
            # first call included: a deadline from its own call's start would answer at 1.9 s
            # (the bound sits halfway, so a busy machine's late timer cannot pass for the bug)
            assert time.perf_counter() - started < 1.45
            assert await first == "brain_timeout"

        run(brain, scenario, timeout_ms=1000)
        assert brain.calls == [1, 1]


def test_a_brain_without_score_many_is_called_once_per_transaction() -> None:
    with fake_brain(score=0.3) as brain:
        brain.mode, brain.delay_ms, brain.many = "slow", 100, False

        async def scenario(client: BrainClient) -> None:
            first = asyncio.create_task(client.score(_tx(0), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            await asyncio.sleep(0.03)
            rest = [client.score(_tx(n), HISTORY, tenant_uuid="t-1", created_at_ms=1) for n in range(1, 4)]
            assert [s.score for s in await asyncio.gather(first, *rest)] == [0.3] * 4

        run(brain, scenario)
        # Score, the refused ScoreMany (no transaction counted), then Score for each of the three
        assert brain.calls == [1, 1, 1, 1]


def test_a_batch_call_outliving_its_oldest_deadline_answers_the_others_and_counts_as_answered() -> None:
    breaker = MemoryBreaker(CONFIG)
    with fake_brain(score=0.3) as brain:
        brain.mode, brain.delay_ms = "slow", 200

        async def scenario(client: BrainClient) -> None:
            first = asyncio.create_task(client.score(_tx(0), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            await asyncio.sleep(0.01)
            oldest = asyncio.create_task(client.score(_tx(1), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            await asyncio.sleep(0.17)
            newest = asyncio.create_task(client.score(_tx(2), HISTORY, tenant_uuid="t-1", created_at_ms=1))
            outcomes = await asyncio.gather(first, oldest, newest, return_exceptions=True)
            codes = [o.code if isinstance(o, BrainUnavailable) else "ok" for o in outcomes]
            # The batch of the two went out at ~0.2 s and came back at ~0.4 s: after the oldest's
            # deadline (0.31 s), which its timer answered, before the newest's (0.48 s)
            assert codes == ["ok", "brain_timeout", "ok"]
            assert (await breaker.state("fraud-brain")).failures == 0  # the brain answered

        run(brain, scenario, timeout_ms=300, breaker=breaker)
        assert brain.calls == [1, 2]


def test_a_stream_against_a_failing_brain_reaches_it_three_times_then_never() -> None:
    """Transactions keep arriving while calls fail: the next call's permit, asked while the
    previous call was out, must not let a fourth call through once three failed in a row."""
    with fake_brain() as brain:
        brain.mode, brain.fail_after_ms = "fail", 30  # others arrive while each call is out

        async def scenario(client: BrainClient) -> None:
            stream = []
            for _ in range(40):  # one every 5 ms for 200 ms
                stream.append(asyncio.ensure_future(fail_open_code(client)))
                await asyncio.sleep(0.005)
            codes = await asyncio.gather(*stream)
            assert codes[0] == "brain_unavailable" and codes[-1] == "breaker_open"

        run(brain, scenario)
        assert len(brain.calls) == 3, brain.calls


def test_a_stream_against_a_healthy_brain_is_scored_in_batches() -> None:
    with fake_brain(score=0.2) as brain:
        brain.mode, brain.delay_ms = "slow", 20  # others arrive while each call is out

        async def scenario(client: BrainClient) -> None:
            stream = []
            for _ in range(40):
                stream.append(asyncio.ensure_future(client.score(TX, HISTORY, tenant_uuid="t", created_at_ms=1)))
                await asyncio.sleep(0.005)
            assert [score.score for score in await asyncio.gather(*stream)] == [0.2] * 40

        assert run(brain, scenario, breaker=MemoryBreaker(PATIENT)) == ["ok"] * 40
        assert sum(brain.calls) == 40 and len(brain.calls) < 40  # batched

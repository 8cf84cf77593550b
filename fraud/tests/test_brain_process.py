"""The real brain process (`manage.py run_brain` on a free port), as its callers see it over gRPC:
scores with reasons, batches (ScoreMany), health, bad input, fault injection, restarts, first-start
training, metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, multiprocess

from fraud.brain import model as brain_model
from fraud.brain.synthetic import DAY_MS, HOUR_MS, START_MS, Earlier, history_of
from fraud.engine.messages import history_message
from fraud.protos import fraud_pb2, fraud_pb2_grpc
from tests.support.brain import (
    NOT_SERVING,
    SERVING,
    BrainProcess,
    brain_process,
    health_status,
)
from tests.support.waiting import wait_until

NOW = START_MS + 20 * DAY_MS + 14 * HOUR_MS


def _habit() -> list[Earlier]:
    return [Earlier(NOW - (20 - i) * DAY_MS, 20.0 + 3 * (i % 5), "FR", f"m{i % 3}") for i in range(20)]


def _request(amount: float = 900.0, **fields: object) -> fraud_pb2.Transaction:
    """A transaction 30x above an honest habit, unless `amount` says otherwise."""
    tx = Earlier(NOW, amount, "FR", "m1")
    message = fraud_pb2.Transaction(
        transaction_id="tx-1",
        tenant="00000000-0000-0000-0000-000000000001",
        user_id="alice",
        amount=amount,
        currency="EUR",
        merchant="m1",
        country="FR",
        created_at_ms=NOW,
        history=history_message(history_of(_habit(), tx)),
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


@pytest.fixture
def stub_of() -> Iterator[object]:
    channels: list[grpc.Channel] = []

    def make(address: str) -> fraud_pb2_grpc.FraudBrainStub:
        channels.append(grpc.insecure_channel(address))
        return fraud_pb2_grpc.FraudBrainStub(channels[-1])

    yield make
    for channel in channels:
        channel.close()


def test_the_brain_scores_with_the_models_reasons_and_version(
    brain: BrainProcess,
    brain_model_dir: Path,
    stub_of,  # type: ignore[no-untyped-def]
) -> None:
    # Given a running brain; when a transaction far above its user's habit is scored
    reply = stub_of(brain.address).Score(_request(900.0), timeout=5)
    honest = stub_of(brain.address).Score(_request(25.0), timeout=5)

    # Then the answer names the amount first, with the analyst's sentence and the model's version
    assert 0.0 <= honest.score < reply.score <= 1.0
    assert reply.reasons[0].code == "amount_vs_habit"
    assert reply.reasons[0].message.endswith("x the user's usual")
    assert reply.reasons[0].contribution > 0
    assert reply.model_version == brain_model.load(brain_model_dir).version
    assert health_status(brain.address) == SERVING


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"amount": float("nan")}, "amount must be a finite number"),
        ({"amount": -5.0}, "amount must be a finite number"),
        ({"created_at_ms": 0}, "created_at_ms"),
    ],
)
def test_bad_input_is_invalid_argument_and_the_brain_keeps_serving(
    brain: BrainProcess,
    stub_of,  # type: ignore[no-untyped-def]
    fields: dict[str, object],
    complaint: str,
) -> None:
    stub = stub_of(brain.address)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Score(_request(**fields), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in refused.value.details()
    assert stub.Score(_request(), timeout=5).score > 0


def test_a_transaction_without_history_is_invalid_argument(brain: BrainProcess, stub_of) -> None:  # type: ignore[no-untyped-def]
    message = _request()
    message.ClearField("history")
    with pytest.raises(grpc.RpcError) as refused:
        stub_of(brain.address).Score(message, timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "history is required" in refused.value.details()


def _batch(*transactions: fraud_pb2.Transaction) -> fraud_pb2.TransactionBatch:
    return fraud_pb2.TransactionBatch(transactions=transactions)


def test_score_many_answers_each_transaction_in_order_and_refuses_only_the_invalid_one(
    brain: BrainProcess,
    stub_of,  # type: ignore[no-untyped-def]
) -> None:
    # Given a batch of a suspicious payment, one with a negative amount and a routine one
    stub = stub_of(brain.address)
    batch = _batch(_request(900.0, transaction_id="a"), _request(-5.0, transaction_id="b"), _request(25.0))

    # When it is scored in one call
    reply = stub.ScoreMany(batch, timeout=5)

    # Then two replies and one invalid, in the batch's order, each reply what Score gives alone
    assert [result.WhichOneof("result") for result in reply.results] == ["reply", "invalid", "reply"]
    assert "amount must be a finite number" in reply.results[1].invalid
    assert reply.results[0].reply == stub.Score(_request(900.0), timeout=5)
    assert reply.results[2].reply == stub.Score(_request(25.0), timeout=5)
    assert reply.results[0].reply.reasons[0].code == "amount_vs_habit"
    assert reply.results[2].reply.score < reply.results[0].reply.score


@pytest.mark.parametrize("size", [0, 257])
def test_an_empty_or_oversized_batch_is_invalid_argument(brain: BrainProcess, stub_of, size: int) -> None:  # type: ignore[no-untyped-def]
    stub = stub_of(brain.address)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ScoreMany(_batch(*[_request() for _ in range(size)]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a batch holds 1 to 256 transactions, not {size}" == refused.value.details()
    # The limit itself is served, and the brain goes on
    assert len(stub.ScoreMany(_batch(*[_request() for _ in range(256)]), timeout=10).results) == 256
    assert health_status(brain.address) == SERVING


def test_failure_rate_one_answers_every_call_unavailable(brain_model_dir: Path, stub_of) -> None:  # type: ignore[no-untyped-def]
    with brain_process(brain_model_dir, FRAUD_BRAIN_FAILURE_RATE="1") as failing:
        assert health_status(failing.address) == SERVING  # up, but every Score fails
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as failed:
                stub_of(failing.address).Score(_request(), timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # A batch is one call: it fails whole, its valid transactions with the invalid one
        with pytest.raises(grpc.RpcError) as failed:
            stub_of(failing.address).ScoreMany(_batch(_request(), _request(-1.0)), timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "injected failure" in failed.value.details()


def test_slow_rate_one_makes_a_client_deadline_expire_without_blocking_others(
    brain_model_dir: Path,
    stub_of,  # type: ignore[no-untyped-def]
) -> None:
    with brain_process(brain_model_dir, FRAUD_BRAIN_SLOW_RATE="1", FRAUD_BRAIN_SLOW_MS="400") as slow:
        stub = stub_of(slow.address)
        # A 100 ms deadline expires; a patient caller gets its answer 400 ms later.
        with pytest.raises(grpc.RpcError) as late:
            stub.Score(_request(), timeout=0.1)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Ten slow calls at once take about one delay, not ten (4 s, past their 2 s deadline):
        # the delay never blocks the loop.
        futures = [stub.Score.future(_request(), timeout=2) for _ in range(10)]
        replies = [future.result() for future in futures]
        assert all(reply.reasons for reply in replies)
        # A batch is delayed once, as one call: past a 100 ms deadline, within 2 s
        with pytest.raises(grpc.RpcError) as late:
            stub.ScoreMany(_batch(*[_request() for _ in range(8)]), timeout=0.1)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        batch = stub.ScoreMany(_batch(*[_request() for _ in range(8)]), timeout=2)
        assert [result.reply.reasons[0].code for result in batch.results] == ["amount_vs_habit"] * 8
        assert health_status(slow.address, timeout=0.3) == SERVING  # health is never delayed


def test_stop_then_start_on_the_same_port(brain: BrainProcess, stub_of) -> None:  # type: ignore[no-untyped-def]
    stub = stub_of(brain.address)
    assert stub.Score(_request(), timeout=5).model_version

    assert brain.stop() == 0  # SIGTERM: a graceful shutdown, exit code 0
    with pytest.raises(grpc.RpcError) as down:
        stub.Score(_request(), timeout=1)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert health_status(brain.address) is None

    brain.start()
    assert wait_until(lambda: stub.Score(_request(), timeout=1), timeout=10, what="a score after the restart")

    brain.kill()
    assert health_status(brain.address) is None


def test_sigterm_lets_a_call_in_flight_finish(brain_model_dir: Path, stub_of) -> None:  # type: ignore[no-untyped-def]
    slow_env = {"FRAUD_BRAIN_SLOW_RATE": "1", "FRAUD_BRAIN_SLOW_MS": "800", "LOG_LEVEL": "debug"}
    with brain_process(brain_model_dir, **slow_env) as slow:
        # Given a call the brain is still working on (it logs the delay at debug level)
        future = stub_of(slow.address).Score.future(_request(), timeout=10)
        wait_until(lambda: "Delaying tx-1" in slow.output(), timeout=5, what="the brain to receive the call")
        # When it is told to stop
        stopper = threading.Thread(target=slow.stop)
        stopper.start()
        # Then that call is answered before it exits (the grace), and it exits cleanly
        assert future.result().reasons
        stopper.join(20)
        assert not stopper.is_alive()


def test_a_first_start_trains_the_model_while_health_says_not_serving(tmp_path: Path, stub_of) -> None:  # type: ignore[no-untyped-def]
    # Given no model at all; when the brain starts
    model_dir = tmp_path / "fresh-model"
    with brain_process(model_dir, start=False, LOG_LEVEL="info") as fresh:
        fresh.launch()
        seen: list[int | None] = []

        def serving() -> bool:
            seen.append(health_status(fresh.address))
            return seen[-1] == SERVING

        wait_until(serving, timeout=60, what="the fresh brain to serve")

        # Then health said NOT_SERVING while it trained, the log says so with the time it took,
        # and the artefact it saved is what it serves
        assert NOT_SERVING in seen
        lines = [json.loads(line) for line in fresh.output().splitlines() if line.startswith("{")]
        messages = [line["message"] for line in lines]
        assert any(m.startswith("No model in") and "training one" in m for m in messages)
        trained = next(line for line in lines if line["message"].startswith("Trained model"))
        assert trained["seconds"] > 0 and trained["level"] == "info"
        version = brain_model.load(model_dir).version
        assert stub_of(fresh.address).Score(_request(), timeout=5).model_version == version


def test_the_brains_metrics_land_in_the_multiprocess_folder(
    brain_model_dir: Path,
    tmp_path: Path,
    stub_of,  # type: ignore[no-untyped-def]
) -> None:
    # Given a brain counting into a metrics folder of its own
    folder = tmp_path / "metrics"
    with brain_process(brain_model_dir, PROMETHEUS_MULTIPROC_DIR=str(folder)) as counted:
        stub = stub_of(counted.address)
        # When it answers two calls and refuses one, then a batch of three with one invalid
        stub.Score(_request(), timeout=5)
        stub.Score(_request(), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.Score(_request(amount=-1.0), timeout=5)
        stub.ScoreMany(_batch(_request(), _request(amount=-1.0), _request()), timeout=5)

    # Then the folder the web's /metrics reads holds its figures: transactions counted each by
    # its outcome, calls timed once each
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    sample = registry.get_sample_value
    assert sample("sentinel_fraud_brain_requests_total", {"outcome": "ok"}) == 4
    assert sample("sentinel_fraud_brain_requests_total", {"outcome": "invalid"}) == 2
    assert sample("sentinel_fraud_brain_requests_total", {"outcome": "injected_failure"}) == 0
    assert sample("sentinel_fraud_brain_score_seconds_count") == 4


def test_two_brains_starting_together_on_one_empty_folder_serve_one_model(
    tmp_path: Path,
    stub_of,  # type: ignore[no-untyped-def]
) -> None:
    # Given no model, when two brains start at once on the same folder (both train)
    model_dir = tmp_path / "shared-model"
    with brain_process(model_dir, start=False) as first, brain_process(model_dir, start=False) as second:
        first.launch()
        second.launch()
        first.wait_serving()
        second.wait_serving()

        # Then both serve the one artefact left in the folder, and no staging folder remains
        version = brain_model.load(model_dir).version
        assert stub_of(first.address).Score(_request(), timeout=5).model_version == version
        assert stub_of(second.address).Score(_request(), timeout=5).model_version == version
        assert [p.name for p in tmp_path.iterdir()] == ["shared-model"]


def test_a_second_brain_on_a_taken_port_fails_saying_so(brain: BrainProcess, brain_model_dir: Path) -> None:
    with brain_process(brain_model_dir, start=False) as second:
        second.address, second.port = brain.address, brain.port
        process = second.launch()
        assert process.wait(timeout=60) != 0
        assert f"could not start on {brain.address}" in second.output()
    assert health_status(brain.address) == SERVING

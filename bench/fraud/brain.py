"""Part (a), the brain alone, and starting/stopping the brain for the other parts."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import BenchError
from bench.common.cpu import CpuSnapshot, cpu_between, cpu_snapshot
from bench.common.processes import Service, start_service, stop_service, wait_serving
from bench.fraud.config import Plan
from fraud.chaos import TransactionMaker
from fraud.engine.messages import transaction_message
from fraud.engine.transaction import History
from fraud.engine.validation import parse_transaction
from fraud.protos import fraud_pb2, fraud_pb2_grpc
from tests.support.net import free_port

# run_brain trains the model on its first start when var/ holds none: allow for it.
BRAIN_START_TIMEOUT_S = 600.0
# Fault injection off whatever the caller's shell says: the bench measures the brain, not the drill.
NO_FAULTS = {"FRAUD_BRAIN_SLOW_RATE": "0", "FRAUD_BRAIN_FAILURE_RATE": "0"}


@dataclass(frozen=True)
class BrainFigures:
    """`scores` answered in `wall` s at `concurrency` in flight; latencies in ms; `cpu_us` the
    brain's CPU per score; `failed` calls that did not answer OK."""

    concurrency: int
    scores: int
    failed: int
    wall: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    brain_cores: float


def brain_command(plan: Plan, port: int) -> list[str]:
    """The brain's command line; BenchError when `manage.py run_brain` does not exist yet."""
    if plan.fake_brain:
        return [sys.executable, "-m", "bench.fraud.fake_brain", "--port", str(port)]
    if importlib.util.find_spec("fraud.management.commands.run_brain") is None:
        raise BenchError(
            "manage.py run_brain is missing (fraud/management/commands/run_brain.py): the brain is not "
            "merged yet. `--fake-brain` runs the bench against the scripted stand-in instead."
        )
    return [sys.executable, "manage.py", "run_brain", "--address", f"127.0.0.1:{port}"]


def serving(address: str) -> bool:
    """Whether the brain's health service says SERVING (False while it starts or trains)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def start_brain(plan: Plan, env: dict[str, str], logdir: Path, port: int | None = None) -> tuple[Service, str]:
    """The brain on a free port (or `port`), serving: (it, its address)."""
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    service = start_service("brain", brain_command(plan, port), env={**env, **NO_FAULTS}, logdir=logdir)
    what = f"the brain at {address}"
    try:
        wait_serving(lambda: serving(address), what=what, service=service, timeout=BRAIN_START_TIMEOUT_S)
    except BaseException:
        stop_service(service)  # not yet the caller's to stop
        raise
    return service, address


def score_request(body: dict[str, object], n: int) -> fraud_pb2.Transaction:
    """A Score request like the web process sends (`fraud.engine.messages`): a known user with some
    history."""
    tx, _ = parse_transaction(body)
    history = History(
        count_total=20 + n % 30,
        count_10m=n % 3,
        count_1h=1 + n % 5,
        count_24h=4 + n % 9,
        amount_1h=42.0,
        log_amount_mean=3.6,
        log_amount_std=0.8,
        last_at_ms=int(time.time() * 1000) - 3_600_000,
        country_seen=n % 10 != 0,
        merchant_seen=n % 4 != 0,
        countries_24h=1,
    )
    return transaction_message(tx, history, "00000000-0000-0000-0000-000000000001", int(time.time() * 1000))


async def _drive(address: str, concurrency: int, duration: float) -> tuple[list[float], int, float]:
    """`concurrency` callers on one channel (as a web process has), each calling Score back to back
    for `duration` s: (latencies in s, failures, wall s)."""
    make = TransactionMaker("bench")
    latencies: list[float] = []
    failed = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = fraud_pb2_grpc.FraudBrainStub(channel)  # type: ignore[no-untyped-call]
        deadline = time.perf_counter() + duration

        async def caller() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                request = score_request(make(), len(latencies))
                sent = time.perf_counter()
                try:
                    await stub.Score(request, timeout=2.0)
                except grpc.aio.AioRpcError:
                    failed += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return latencies, failed, time.perf_counter() - began


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def measure_brain(plan: Plan, brain: Service, address: str) -> BrainFigures:
    """Part (a): a 1 s warm-up, then `plan.brain_duration` s measured, the brain's CPU with it."""

    # grpc.aio allows one event loop per process: one asyncio.run for the warm-up and the run.
    async def both() -> tuple[list[float], int, float, CpuSnapshot, CpuSnapshot]:
        await _drive(address, plan.concurrency, 1.0)
        before = cpu_snapshot()
        latencies, failed, wall = await _drive(address, plan.concurrency, plan.brain_duration)
        return latencies, failed, wall, before, cpu_snapshot()

    latencies, failed, wall, before, after = asyncio.run(both())
    if not latencies:
        raise BenchError(f"the brain answered no Score call ({failed} failed):\n{brain.tail()}")
    cpu = cpu_between(before, after, {"brain": brain.pid})
    return BrainFigures(
        concurrency=plan.concurrency,
        scores=len(latencies),
        failed=failed,
        wall=wall,
        p50_ms=percentile_ms(latencies, 0.5),
        p99_ms=percentile_ms(latencies, 0.99),
        cpu_us=cpu.seconds("brain") / len(latencies) * 1e6,
        brain_cores=cpu.cores["brain"],
    )

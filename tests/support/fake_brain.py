"""A scripted FraudBrain: a real grpc.aio server on 127.0.0.1, whose answers a test decides.

For tests of the brain's callers (the client, its breaker, the re-score task) that need the brain
to be slow, failing or gone on cue. The acceptance tests use the real brain process instead
(`tests.support.brain`).

It serves from a thread pool, so sync tests (Django's) and async ones use it alike::

    with fake_brain(score=0.95) as brain:
        brain.address            # "127.0.0.1:PORT"
        brain.mode = "fail"      # "ok" | "fail" (UNAVAILABLE) | "slow" (delay_ms, then ok)
        brain.fail_after_ms = 30 # "fail" answers after this long (0: at once)
        brain.received           # every Transaction message received, in order
        brain.calls              # the transactions per call: 1 for Score, n for ScoreMany
        brain.many = False       # ScoreMany answers UNIMPLEMENTED, as a brain older than it
        brain.invalid = {"t-9"}  # transaction ids ScoreMany says are invalid
        brain.stop()             # the port refuses connections from now on
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fraud.protos import fraud_pb2, fraud_pb2_grpc


class FakeBrain(fraud_pb2_grpc.FraudBrainServicer):
    """A sync gRPC server (a thread pool): unlike grpc.aio, which allows one event loop per
    process, it can be stopped and started again in one test process."""

    def __init__(self, *, score: float = 0.1, model_version: str = "fake-1") -> None:
        self.score = score
        self.model_version = model_version
        self.mode = "ok"
        self.delay_ms = 2000
        self.fail_after_ms = 0
        self.received: list[fraud_pb2.Transaction] = []
        self.calls: list[int] = []
        self.many = True
        self.invalid: set[str] = set()
        self.address = ""
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()

    def Score(self, request: fraud_pb2.Transaction, context: grpc.ServicerContext) -> fraud_pb2.ScoreReply:
        self._received(context, [request])
        return self._reply()

    def ScoreMany(
        self, request: fraud_pb2.TransactionBatch, context: grpc.ServicerContext
    ) -> fraud_pb2.ScoreBatchReply:
        if not self.many:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self._received(context, list(request.transactions))
        return fraud_pb2.ScoreBatchReply(
            results=[
                fraud_pb2.ScoreResult(invalid="scripted invalid")
                if tx.transaction_id in self.invalid
                else fraud_pb2.ScoreResult(reply=self._reply())
                for tx in request.transactions
            ]
        )

    def _received(self, context: grpc.ServicerContext, transactions: list[fraud_pb2.Transaction]) -> None:
        """Notes one call's transactions, then fails or waits as scripted."""
        with self._lock:
            self.received.extend(transactions)
            self.calls.append(len(transactions))
        if self.mode == "fail":
            time.sleep(self.fail_after_ms / 1000)
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted failure")
        if self.mode == "slow":
            time.sleep(self.delay_ms / 1000)

    def _reply(self) -> fraud_pb2.ScoreReply:
        reason = fraud_pb2.Reason(code="amount_vs_habit", message="scripted reason", contribution=1.5)
        return fraud_pb2.ScoreReply(score=self.score, reasons=[reason], model_version=self.model_version)

    def start(self, port: int = 0) -> FakeBrain:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        fraud_pb2_grpc.add_FraudBrainServicer_to_server(self, server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if not bound:
            raise RuntimeError(f"the fake brain could not bind 127.0.0.1:{port}")
        server.start()
        self.address = f"127.0.0.1:{bound}"
        self._server = server
        return self

    def stop(self) -> None:
        """Stops serving at once (in-flight calls are cancelled); the port then refuses."""
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None

    def restart(self) -> None:
        """Serves again on the same port (the brain came back)."""
        port = int(self.address.rsplit(":", 1)[1])
        self.stop()
        self.start(port)


@contextlib.contextmanager
def fake_brain(**options: Any) -> Iterator[FakeBrain]:
    brain = FakeBrain(**options).start()
    try:
        yield brain
    finally:
        brain.stop()

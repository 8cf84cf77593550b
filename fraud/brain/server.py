"""The brain's gRPC server: FraudBrain.Score and .ScoreMany, and grpc.health.v1.Health, on one
grpc.aio server.

Health answers NOT_SERVING until the model is loaded (a first start trains it: ~5 s), SERVING
after, and NOT_SERVING again once a shutdown begins. Scoring runs on the event loop itself: one
call costs ~0.2 ms of CPU, less than a hop to a thread would.

Fault injection, for drills (`manage.py chaos`), off by default: a share of calls answered
UNAVAILABLE, and a share delayed by `slow_ms` (asyncio.sleep, so the other calls go on). A
ScoreMany is one call: its dice are drawn once, and the whole batch fails or waits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from core.collector import settle_garbage_collector
from fraud.brain import model as brain_model
from fraud.brain.features import Facts
from fraud.brain.metrics import brain_requests, brain_score_seconds
from fraud.engine.messages import history_from_message
from fraud.protos import fraud_pb2, fraud_pb2_grpc

logger = logging.getLogger("sentinel.fraud.brain")
SERVICE_NAME = "sentinel.fraud.v1.FraudBrain"
# Strings longer than this are refused: the web validates tighter bounds, this only keeps a
# stray caller from making the brain log or hash megabytes.
MAX_STRING = 256
# The most transactions one ScoreMany may carry (fraud.proto): a web process sends those that
# arrived while its previous call was out; this bounds what one call holds the event loop for:
# ~3 ms for 256 routine payments, ~50 ms were they all above the SHAP floor (measured in-process
# on the shared 2-core box; the SHAP pass costs ~200 us a row, batched or not).
MAX_BATCH: Final = 256


@dataclass
class FaultInjection:
    """Which calls fail or slow down on purpose: `failure_rate` and `slow_rate` are shares (0..1)
    of calls, `slow_ms` the delay; `seed` makes a drill reproducible (None: a fresh one)."""

    slow_rate: float = 0.0
    slow_ms: int = 0
    failure_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - a drill's dice, not a secret

    @property
    def active(self) -> bool:
        return self.slow_rate > 0 or self.failure_rate > 0

    def draw(self) -> tuple[bool, float]:
        """(fail this call, seconds to delay it)."""
        if not self.active:
            return False, 0.0
        fail = self.rng.random() < self.failure_rate
        slow = self.rng.random() < self.slow_rate
        return fail, (self.slow_ms / 1000 if slow else 0.0)


def invalid(request: fraud_pb2.Transaction) -> str | None:
    """Why `request` cannot be scored (INVALID_ARGUMENT's message), or None when it can."""
    if not (math.isfinite(request.amount) and request.amount > 0):
        return f"amount must be a finite number > 0, not {request.amount!r}"
    if not request.HasField("history"):
        return "history is required (all zero for a user never seen)"
    if request.created_at_ms <= 0:
        return "created_at_ms must be a Unix epoch time in ms"
    h = request.history
    if not all(math.isfinite(v) and v >= 0 for v in (h.amount_1h, h.log_amount_std)):
        return "history.amount_1h and history.log_amount_std must be finite and >= 0"
    if not math.isfinite(h.log_amount_mean):
        return "history.log_amount_mean must be finite"
    if not 0 <= h.last_at_ms <= request.created_at_ms:
        return "history.last_at_ms must be 0 or a time no later than created_at_ms"
    if any(len(s) > MAX_STRING for s in (request.transaction_id, request.user_id, request.merchant, request.country)):
        return f"strings are limited to {MAX_STRING} characters"
    return None


class BrainServicer(fraud_pb2_grpc.FraudBrainServicer):
    """FraudBrain.Score: the model's probability of fraud, its reasons and the model's version;
    FraudBrain.ScoreMany: the same for each transaction of a batch, in one model pass.

    Both go through `_results` (Score is a batch of one). Errors of a whole call: UNAVAILABLE
    while the model loads or when fault injection fails the call; INTERNAL for a bug (logged);
    INVALID_ARGUMENT for a batch of no transaction or more than MAX_BATCH. A transaction `invalid`
    refuses is Score's INVALID_ARGUMENT, and in a batch its `ScoreResult.invalid` (the others are
    scored all the same).
    """

    def __init__(self, faults: FaultInjection | None = None) -> None:
        self.model: brain_model.BrainModel | None = None
        self.faults = faults or FaultInjection()

    async def Score(self, request: fraud_pb2.Transaction, context: grpc.aio.ServicerContext) -> fraud_pb2.ScoreReply:
        started = time.perf_counter()
        answer = await self._results([request])
        _count(answer, 1, started)
        if isinstance(answer, _Refusal):
            await _abort(context, answer.status, answer.detail)
        (result,) = answer
        if result.HasField("invalid"):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, result.invalid)
        return result.reply

    async def ScoreMany(
        self, request: fraud_pb2.TransactionBatch, context: grpc.aio.ServicerContext
    ) -> fraud_pb2.ScoreBatchReply:
        started = time.perf_counter()
        size = len(request.transactions)
        answer: list[fraud_pb2.ScoreResult] | _Refusal
        if not 1 <= size <= MAX_BATCH:
            # The call's shape, checked first: a caller's bug, whatever the brain's state.
            detail = f"a batch holds 1 to {MAX_BATCH} transactions, not {size}"
            answer = _Refusal("invalid", grpc.StatusCode.INVALID_ARGUMENT, detail)
        else:
            answer = await self._results(request.transactions)
        _count(answer, size, started)
        if isinstance(answer, _Refusal):
            await _abort(context, answer.status, answer.detail)
        return fraud_pb2.ScoreBatchReply(results=answer)

    async def _results(self, requests: Sequence[fraud_pb2.Transaction]) -> list[fraud_pb2.ScoreResult] | _Refusal:
        """One result per request in order (a reply, or why it is invalid), or the refusal of
        the whole call. Fault injection draws once per call: a batch is delayed or failed whole,
        as the single call it is on the wire."""
        model = self.model
        if model is None:
            return _Refusal("not_ready", grpc.StatusCode.UNAVAILABLE, "the model is loading")
        fail, delay = self.faults.draw()
        if delay:
            logger.debug("Delaying %s by %.0f ms (fault injection).", _naming(requests), delay * 1000)
            await asyncio.sleep(delay)
        if fail:
            return _Refusal("injected_failure", grpc.StatusCode.UNAVAILABLE, "injected failure (fault injection)")
        problems = [invalid(request) for request in requests]
        valid = [request for request, problem in zip(requests, problems, strict=True) if problem is None]
        try:
            explained = iter(model.explain_many([_facts(request) for request in valid]))
        except Exception:
            logger.exception("Scoring %s failed", _naming(valid))
            return _Refusal("error", grpc.StatusCode.INTERNAL, "the brain failed to score this transaction")
        return [
            fraud_pb2.ScoreResult(invalid=problem)
            if problem is not None
            else fraud_pb2.ScoreResult(reply=_reply(next(explained), model.version))
            for problem in problems
        ]


@dataclass(frozen=True)
class _Refusal:
    """A whole call refused: `outcome` (metrics.OUTCOMES, counted for each of its transactions)
    and the status to abort with."""

    outcome: str
    status: grpc.StatusCode
    detail: str


def _count(answer: list[fraud_pb2.ScoreResult] | _Refusal, size: int, started: float) -> None:
    """brain_requests per transaction by its outcome (a refused call's for each of its `size`),
    brain_score_seconds once for the call."""
    if isinstance(answer, _Refusal):
        if size:
            brain_requests.labels(outcome=answer.outcome).inc(size)
    else:
        invalids = sum(1 for result in answer if result.HasField("invalid"))
        if invalids:
            brain_requests.labels(outcome="invalid").inc(invalids)
        if size - invalids:
            brain_requests.labels(outcome="ok").inc(size - invalids)
    brain_score_seconds.observe(time.perf_counter() - started)


async def _abort(context: grpc.aio.ServicerContext, status: grpc.StatusCode, detail: str) -> NoReturn:
    await context.abort(status, detail)
    raise RuntimeError("context.abort returned")  # it raises; its stub does not say so


def _facts(request: fraud_pb2.Transaction) -> Facts:
    return Facts(
        amount=request.amount,
        currency=request.currency,
        country=request.country,
        merchant=request.merchant,
        created_at_ms=request.created_at_ms,
        history=history_from_message(request.history),
    )


def _reply(explained: brain_model.Explained, model_version: str) -> fraud_pb2.ScoreReply:
    reasons = [
        fraud_pb2.Reason(code=r.code, message=r.message, contribution=r.contribution or 0.0) for r in explained.reasons
    ]
    # Four decimals: finer than any threshold an analyst sets, and readable in an answer.
    return fraud_pb2.ScoreReply(score=round(explained.score, 4), reasons=reasons, model_version=model_version)


def _naming(requests: Sequence[fraud_pb2.Transaction]) -> str:
    """The first transaction's id, and how many more (a log line's subject)."""
    if not requests:
        return "no transaction"
    more = len(requests) - 1
    return requests[0].transaction_id + (f" and {more} more" if more else "")


@dataclass
class BrainOptions:
    """What `run_brain` passes: where to listen and find the model, thresholds for the training
    report, fault injection, and the grace (s) given to in-flight calls on shutdown."""

    address: str
    model_dir: Path
    faults: FaultInjection
    review_threshold: float = 0.5
    decline_threshold: float = 0.9
    grace_seconds: float = 2.0


async def serve(options: BrainOptions, *, stopping: asyncio.Event | None = None) -> None:
    """Serves until SIGTERM or SIGINT (or `stopping` set): health NOT_SERVING, the port bound,
    the model loaded (trained first if missing), SERVING; then a graceful shutdown.

    Raises RuntimeError when the address cannot be bound, and what `model.ensure` raises.
    """
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # gRPC turns SO_REUSEPORT on by default: a second brain on a taken port would then share it
    # silently (half the calls to each); without it the second one fails to start, saying why.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = BrainServicer(options.faults)
    health = HealthServicer()
    fraud_pb2_grpc.add_FraudBrainServicer_to_server(servicer, server)  # type: ignore[no-untyped-call] # generated
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port(options.address)  # raises RuntimeError when it cannot bind
    await server.start()
    logger.info("Fraud brain listening on %s.", options.address, extra={"address": options.address, "port": port})
    try:
        servicer.model = await _load(options)
        settle_garbage_collector()  # the model and the libraries, loaded for good
        await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "Serving model %s.",
            servicer.model.version,
            extra={"model_version": servicer.model.version, "fault_injection": options.faults.active},
        )
        await stopping.wait()
    finally:
        logger.info("Fraud brain stopping (grace %.1f s).", options.grace_seconds)
        await health.enter_graceful_shutdown()
        await server.stop(options.grace_seconds)


async def _set_health(health: HealthServicer, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
    for service in ("", SERVICE_NAME):  # "" is the server as a whole (the health protocol's convention)
        await health.set(service, status)


async def _load(options: BrainOptions) -> brain_model.BrainModel:
    """The model, trained in a thread when missing so health keeps answering NOT_SERVING meanwhile."""
    if not brain_model.exists(options.model_dir):
        logger.info("No model in %s: training one (first start).", options.model_dir)
    ensure: Callable[[], tuple[brain_model.BrainModel, float | None]] = lambda: brain_model.ensure(  # noqa: E731
        options.model_dir,
        review_threshold=options.review_threshold,
        decline_threshold=options.decline_threshold,
    )
    model, trained_seconds = await asyncio.to_thread(ensure)
    if trained_seconds is not None:
        logger.info(
            "Trained model %s in %.1f s (ROC AUC %s).",
            model.version,
            trained_seconds,
            model.meta["metrics"]["roc_auc"],
            extra={"model_version": model.version, "seconds": round(trained_seconds, 2)},
        )
    return model

"""The web process's client of the fraud brain: one grpc.aio channel per process, a deadline per
transaction, behind the gateway engine's circuit breaker in its consecutive-failures mode (SPEC 6).

Calls are batched like a group commit: one call is out at a time, and the transactions that
arrived meanwhile go together in the next (`ScoreMany`, up to MAX_BATCH; a lone one is a plain
`Score`). A quiet process sends each transaction at once; a busy one shares a call's cost (about
0.6 ms of CPU at each end in Python's gRPC, more than the model's work) among the transactions of
a batch. A transaction's deadline runs from when it is handed over, waiting included, and is kept
by a timer of its own: at its deadline it is answered brain_timeout whether it is still waiting or
in a call out, and a call goes on until the latest deadline of its batch (a batch is not cut short
for its oldest member, which a slow moment would otherwise turn into timeouts in a row). A batch is
one call for the breaker (one permit, one outcome: a failure when no reply came by its latest
deadline), so its transactions share the breaker's answer.

Every way of not getting a score raises `BrainUnavailable` with one of FAIL_OPEN_CODES, and the
caller approves unscored (fail-open):

* breaker_open: the breaker refused; the brain was not called (no time spent on it).
* brain_timeout: DEADLINE_EXCEEDED after `timeout_ms`.
* brain_unavailable: UNAVAILABLE (refused connection, brain stopped or restarting).
* brain_error: any other status, or a reply that is not a probability.

Timeouts, unavailability and errors count as breaker failures; a reply counts as a success (a
batch's reply too when it says some of its transactions were invalid: those are brain_error).
Callers are answered before the outcome is recorded; a failure or a probe's success is recorded
before the next call goes out, any other success while it does (`_record_success`).
Every failure but a timeout is logged at WARNING with its gRPC status and details (`FailureLog`:
one line per status per 10 s at most, with the number left out since): a fail-open count says
that the brain failed, the log says why. Timeouts say it themselves, in the latency histogram.
When the breaker itself cannot be asked (Redis down: `BreakerUnavailable`), the brain is called
anyway, unprotected, and `on_breaker_unavailable` is told: losing Redis must not stop scoring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc

from fraud.engine.messages import score_from_reply, transaction_message
from fraud.engine.transaction import BrainUnavailable, History, Score, TransactionIn
from fraud.protos import fraud_pb2, fraud_pb2_grpc
from gateway.engine.breaker import Breaker, BreakerUnavailable, Permit

__all__ = ["CHANNEL_OPTIONS", "BrainClient", "FailureLog"]

logger = logging.getLogger("sentinel.fraud")
_Reply = TypeVar("_Reply")

# gRPC's reconnect backoff starts at 1 s and grows to 120 s: a brain back after a minute's outage
# would then wait up to two minutes for the channel to try again, long after the breaker's trial
# call. A 1 s ceiling keeps the channel's retries within the breaker's cooldown.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)

_CODES: Final = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "brain_timeout",
    grpc.StatusCode.UNAVAILABLE: "brain_unavailable",
}

# The most transactions in one ScoreMany call (the brain takes up to 256).
MAX_BATCH: Final = 64

# The least time between two log lines about brain failures of the same status: a brain that is
# down fails every call (500/s at the benchmark's rate), and one line per 10 s says it as well.
FAILURE_LOG_INTERVAL_S: Final = 10.0


class FailureLog:
    """Logs the brain's failures at WARNING, at most one line per status per `interval_s`.

    The line after a quiet spell says how many failures of that status were left out since the
    previous line (the last ones of a burst are only counted once the status fails again).
    `clock` (monotonic seconds) is for tests.
    """

    def __init__(
        self, *, interval_s: float = FAILURE_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._logged_at: dict[str, float] = {}  # status -> when its last line was logged
        self._left_out: dict[str, int] = {}  # status -> its failures not logged since that line

    def failed(self, *, status: str, details: str, code: str, address: str) -> None:
        """One failed call: `status` is the gRPC status name ("OK" for a reply that was no
        score), `details` its message, `code` the fail-open code the caller answers with."""
        now = self.clock()
        logged_at = self._logged_at.get(status)
        if logged_at is not None and now - logged_at < self.interval_s:
            self._left_out[status] = self._left_out.get(status, 0) + 1
            return
        self._logged_at[status] = now
        left_out = self._left_out.pop(status, 0)
        logger.warning(
            "fraud brain call failed with %s: %s (fail-open %s; %d more %s left out of the log since its last line)",
            status, details, code, left_out, status,
            extra={"grpc_status": status, "grpc_details": details, "fail_open": code, "brain": address,
                   "left_out": left_out},
        )  # fmt: skip


# (outcome, seconds): outcome is "ok", a FAIL_OPEN code, or "breaker_open" (seconds 0).
LatencyObserver = Callable[[str, float], None]


def _ignore_latency(outcome: str, seconds: float) -> None:
    return None


def _nothing() -> None:
    return None


@dataclass(eq=False)
class _Waiting:
    """A transaction handed to the client: its message, when (perf_counter s) it was handed over
    and when its deadline ends, the future its caller awaits and the timer of its deadline."""

    message: fraud_pb2.Transaction
    started: float
    deadline: float
    future: asyncio.Future[Score] = field(repr=False)
    timer: asyncio.TimerHandle = field(init=False, repr=False)  # answers it at its deadline


class BrainClient:
    """Scores transactions with the brain at `address` ("host:port").

    The channel is made on first use, on the running event loop (grpc.aio binds a channel to its
    loop), and shared by every call of this process until `close()`.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_ms: int,
        breaker: Breaker,
        name: str = "fraud-brain",
        observe: LatencyObserver = _ignore_latency,
        on_breaker_unavailable: Callable[[], None] = _nothing,
    ) -> None:
        if timeout_ms < 1:
            raise ValueError(f"timeout_ms must be >= 1, got {timeout_ms}")
        self.address = address
        self.timeout_s = timeout_ms / 1000
        self.breaker = breaker
        self.name = name
        self.observe = observe
        self.on_breaker_unavailable = on_breaker_unavailable
        self.failures = FailureLog()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        self._many = True  # False once the brain said it has no ScoreMany
        self._recording: set[asyncio.Task[None]] = set()  # successes being recorded (see _record_success)
        self._next_permit: asyncio.Future[Permit | None] | None = None  # see _ask_next_permit
        self._calling = False  # a call is out on a closed breaker's permit

    def _stub_now(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._stub = fraud_pb2_grpc.FraudBrainStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def score(self, tx: TransactionIn, history: History, *, tenant_uuid: str, created_at_ms: int) -> Score:
        """The brain's score of `tx`, within `timeout_ms` of this call. Raises `BrainUnavailable`
        (see the module's docstring)."""
        started = time.perf_counter()
        waiting = _Waiting(
            transaction_message(tx, history, tenant_uuid, created_at_ms),
            started,
            started + self.timeout_s,
            asyncio.get_running_loop().create_future(),
        )
        waiting.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, waiting)
        self._waiting.append(waiting)
        self._ask_next_permit()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting(), name="fraud-brain-sender")
        return await waiting.future

    async def _send_waiting(self) -> None:
        """Sends what waits, a batch at a time, until nothing does."""
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._send(batch)
        except Exception:  # a bug here must not leave callers waiting: they fail open
            logger.exception("fraud brain sender failed")
            for waiting in batch + self._waiting:
                self._fail(waiting, "brain_error", "the brain's client failed")
            self._waiting = []
        finally:
            self._sender = None
            # Never carried to a later run, where it would be stale. An unused closed permit
            # changed nothing in the breaker; a probe's token frees itself after its TTL.
            self._next_permit = None

    async def _send(self, batch: list[_Waiting]) -> None:
        now = time.perf_counter()
        live = []
        for waiting in batch:
            # Done: its deadline passed while it waited (its timer answered it), or its request
            # was cancelled (client gone, server stopping).
            if not waiting.future.done() and waiting.deadline > now:
                live.append(waiting)
        if len(live) > 1 and self._many:
            await self._score_many(live)
        else:
            await asyncio.gather(*(self._score_one(waiting) for waiting in live))

    async def _score_one(self, waiting: _Waiting) -> None:
        admitted, permit = await self._admitted([waiting])
        if not admitted:
            return
        try:
            timeout = waiting.deadline - time.perf_counter()
            reply = await self._out(self._stub_now().Score(waiting.message, timeout=timeout), permit)
            score = score_from_reply(reply)
        except grpc.aio.AioRpcError as exc:
            await self._record(permit, success=False)
            self._call_failed([waiting], exc)
            return
        except ValueError as exc:
            await self._record(permit, success=False)
            self._reply_refused(waiting, "OK", f"the reply is not a score: {exc}")
            return
        self._succeed(waiting, score)
        await self._record_success(permit)

    async def _score_many(self, batch: list[_Waiting]) -> None:
        admitted, permit = await self._admitted(batch)
        if not admitted:
            return
        request = fraud_pb2.TransactionBatch(transactions=[waiting.message for waiting in batch])
        timeout = max(waiting.deadline for waiting in batch) - time.perf_counter()
        try:
            reply = await self._out(self._stub_now().ScoreMany(request, timeout=timeout), permit)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A brain older than this web process (a rolling upgrade): one call each, as before.
                logger.warning("the fraud brain at %s has no ScoreMany: scoring one call each", self.address)
                self._many = False
                await asyncio.gather(*(self._score_one(waiting) for waiting in batch))
                return
            await self._record(permit, success=False)
            self._call_failed(batch, exc)
            return
        if len(reply.results) != len(batch):
            await self._record(permit, success=False)
            for waiting in batch:
                self._reply_refused(waiting, "OK", f"{len(reply.results)} results for {len(batch)} transactions")
            return
        for waiting, result in zip(batch, reply.results, strict=True):
            if result.WhichOneof("result") != "reply":
                self._reply_refused(waiting, "INVALID_ARGUMENT", result.invalid)
                continue
            try:
                self._succeed(waiting, score_from_reply(result.reply))
            except ValueError as exc:
                self._reply_refused(waiting, "OK", f"the reply is not a score: {exc}")
        await self._record_success(permit)

    async def _admitted(self, batch: list[_Waiting]) -> tuple[bool, Permit | None]:
        """(may the call carrying `batch` go, the breaker's permit for it: None when the breaker
        could not be asked). When it may not, `batch`'s callers are answered breaker_open."""
        permit = await self._permit()
        if permit is not None and not permit.allowed:
            for waiting in batch:
                self._fail(waiting, "breaker_open", f"retry in {permit.retry_after_ms} ms", observed_s=0.0)
            return False, permit
        if permit is not None and permit.probe:
            await self._fresh_channel_if_failing()
        return True, permit

    async def _permit(self) -> Permit | None:
        """The next call's permit: the one asked for while the previous call was out, else now."""
        asked, self._next_permit = self._next_permit, None
        return await asked if asked is not None else await self._acquire()

    def _ask_next_permit(self) -> None:
        """While a call is out on a closed breaker's permit (`_calling`) and transactions wait
        for the next one, asks for that one's permit at once: its Redis round trip overlaps the
        call instead of following it (~a quarter of a batch's time at 500 tx/s, bench/fraud's
        trace). A closed breaker's acquire changes nothing, so a permit asked too early is
        dropped at no cost: a failure drops it (`_record`), and the next call asks again, after
        the failure is counted, as without this."""
        if self._calling and self._waiting and self._next_permit is None:
            self._next_permit = asyncio.ensure_future(self._acquire())

    async def _out(self, call: Awaitable[_Reply], permit: Permit | None) -> _Reply:
        """Awaits `call`, which went out on `permit`: meanwhile the next call's permit may be
        asked for (`_ask_next_permit`)."""
        self._calling = permit is not None and permit.allowed and permit.state == "closed"
        self._ask_next_permit()
        try:
            return await call
        finally:
            self._calling = False

    def _call_failed(self, batch: list[_Waiting], exc: grpc.aio.AioRpcError) -> None:
        code = _CODES.get(exc.code(), "brain_error")
        if code != "brain_timeout":  # the latency histogram tells timeouts apart already
            status, details = exc.code().name, exc.details() or ""
            self.failures.failed(status=status, details=details, code=code, address=self.address)
        for waiting in batch:
            self._fail(waiting, code, exc.code().name)

    def _reply_refused(self, waiting: _Waiting, status: str, details: str) -> None:
        self.failures.failed(status=status, details=details, code="brain_error", address=self.address)
        self._fail(waiting, "brain_error", details)

    def _expire(self, waiting: _Waiting) -> None:
        """Its deadline: answered brain_timeout, waiting or in a call (its reply, if one comes, is
        dropped)."""
        self._fail(waiting, "brain_timeout", "DEADLINE_EXCEEDED")

    def _succeed(self, waiting: _Waiting, score: Score) -> None:
        if waiting.future.done():  # answered at its deadline, or its request cancelled
            return
        waiting.timer.cancel()
        self.observe("ok", time.perf_counter() - waiting.started)
        waiting.future.set_result(score)

    def _fail(self, waiting: _Waiting, code: str, detail: str, *, observed_s: float | None = None) -> None:
        if waiting.future.done():
            return
        waiting.timer.cancel()
        self.observe(code, time.perf_counter() - waiting.started if observed_s is None else observed_s)
        waiting.future.set_exception(BrainUnavailable(code, detail))

    async def close(self) -> None:
        if self._recording:
            await asyncio.gather(*self._recording)
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None

    async def _fresh_channel_if_failing(self) -> None:
        """Before the half-open trial call: a channel still in TRANSIENT_FAILURE fails a call at
        once until its reconnect backoff (up to 1 s) is over, even when the brain is back, and
        the trial would reopen the breaker for another cooldown. A new channel connects now."""
        channel = self._channel
        if channel is not None and channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            self._channel, self._stub = None, None
            await channel.close()

    async def _acquire(self) -> Permit | None:
        try:
            return await self.breaker.acquire(self.name)
        except BreakerUnavailable:
            self.on_breaker_unavailable()
            logger.warning("fraud breaker unavailable; calling the brain unprotected", exc_info=True)
            return None

    async def _record_success(self, permit: Permit | None) -> None:
        """A reply's outcome, after its callers were answered. A probe's success closes the
        breaker before the next call is let through, so it is awaited; any other success only
        ends a failure streak, and is recorded while the next batch goes out (its Redis round trip
        was a tenth of a batch's time at 500 tx/s)."""
        if permit is not None and permit.probe:
            await self._record(permit, success=True)
            return
        task = asyncio.create_task(self._record(permit, success=True))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, permit: Permit | None, *, success: bool) -> None:
        if not success and self._next_permit is not None:
            # Asked before this failure was counted: the next call asks again after it (the
            # failure may open the breaker). A probe's permit, should the breaker have moved to
            # half-open meanwhile, holds a token: kept, and used.
            asked, self._next_permit = self._next_permit, None
            kept = await asked
            if kept is not None and kept.probe:
                self._next_permit = asyncio.get_running_loop().create_future()
                self._next_permit.set_result(kept)
        if permit is None:
            return
        try:
            await self.breaker.record(self.name, permit, success)
        except BreakerUnavailable:
            self.on_breaker_unavailable()
            logger.warning("fraud breaker outcome lost", exc_info=True)

"""The web process's client of the fraud brain: one grpc.aio channel per process, a deadline per
call, behind the gateway engine's circuit breaker in its consecutive-failures mode (SPEC 6).

Every way of not getting a score raises `BrainUnavailable` with one of FAIL_OPEN_CODES, and the
caller approves unscored (fail-open):

* breaker_open: the breaker refused; the brain was not called (no time spent on it).
* brain_timeout: DEADLINE_EXCEEDED after `timeout_ms`.
* brain_unavailable: UNAVAILABLE (refused connection, brain stopped or restarting).
* brain_error: any other status, or a reply that is not a probability.

Timeouts, unavailability and errors count as breaker failures; a reply counts as a success.
Every failure but a timeout is logged at WARNING with its gRPC status and details (`FailureLog`:
one line per status per 10 s at most, with the number left out since): a fail-open count says
that the brain failed, the log says why. Timeouts say it themselves, in the latency histogram.
When the breaker itself cannot be asked (Redis down: `BreakerUnavailable`), the brain is called
anyway, unprotected, and `on_breaker_unavailable` is told: losing Redis must not stop scoring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import grpc

from fraud.engine.messages import score_from_reply, transaction_message
from fraud.engine.transaction import BrainUnavailable, History, Score, TransactionIn
from fraud.protos import fraud_pb2_grpc
from gateway.engine.breaker import Breaker, BreakerUnavailable, Permit

__all__ = ["CHANNEL_OPTIONS", "BrainClient", "FailureLog"]

logger = logging.getLogger("sentinel.fraud")

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

    def _stub_now(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._stub = fraud_pb2_grpc.FraudBrainStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def score(self, tx: TransactionIn, history: History, *, tenant_uuid: str, created_at_ms: int) -> Score:
        """The brain's `Score` of `tx`. Raises `BrainUnavailable` (see the module's docstring)."""
        permit = await self._acquire()
        if permit is not None and not permit.allowed:
            self.observe("breaker_open", 0.0)
            raise BrainUnavailable("breaker_open", f"retry in {permit.retry_after_ms} ms")
        if permit is not None and permit.probe:
            await self._fresh_channel_if_failing()
        request = transaction_message(tx, history, tenant_uuid, created_at_ms)
        started = time.perf_counter()
        try:
            reply = await self._stub_now().Score(request, timeout=self.timeout_s)
            score = score_from_reply(reply)
        except grpc.aio.AioRpcError as exc:
            code = _CODES.get(exc.code(), "brain_error")
            await self._record(permit, success=False)
            self.observe(code, time.perf_counter() - started)
            if code != "brain_timeout":  # the latency histogram tells timeouts apart already
                status, details = exc.code().name, exc.details() or ""
                self.failures.failed(status=status, details=details, code=code, address=self.address)
            raise BrainUnavailable(code, exc.code().name) from None
        except ValueError as exc:
            await self._record(permit, success=False)
            self.observe("brain_error", time.perf_counter() - started)
            details = f"the reply is not a score: {exc}"
            self.failures.failed(status="OK", details=details, code="brain_error", address=self.address)
            raise BrainUnavailable("brain_error", str(exc)) from None
        await self._record(permit, success=True)
        self.observe("ok", time.perf_counter() - started)
        return score

    async def close(self) -> None:
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

    async def _record(self, permit: Permit | None, *, success: bool) -> None:
        if permit is None:
            return
        try:
            await self.breaker.record(self.name, permit, success)
        except BreakerUnavailable:
            self.on_breaker_unavailable()
            logger.warning("fraud breaker outcome lost", exc_info=True)

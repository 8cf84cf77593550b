"""The fraud brain's circuit breaker, Django side (SPEC 6): its numbers from SENTINEL_FRAUD, its
store, and its entry in `GET /circuit/status` / `POST /circuit/reset` (a circuit source listed in
SENTINEL_CIRCUIT_SOURCES, so the gateway imports nothing of fraud).

Like `gateway.breaker_state`: with REDIS_URL the state is a Redis hash under its own prefix, shared
by every web process; without, one `MemoryBreaker` per process (`process_fraud_breaker()`), which
the endpoint records into and the circuit views of the same process read.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict
from typing import Any, Final

from asgiref.sync import async_to_sync
from django.conf import settings

from core.conf import sentinel_settings
from gateway.engine.breaker import (
    STATE_CODES,
    Breaker,
    BreakerConfig,
    MemoryBreaker,
    RedisBreaker,
    breaker_for_a_moment,
)
from gateway.engine.resp import RespClient

BREAKER_NAME: Final = "fraud-brain"


def fraud_breaker_config() -> BreakerConfig:
    """SPEC 6: open after BREAKER_FAILURES consecutive failures (timeouts included), one trial call
    (half_open_max=1, like pybreaker) after BREAKER_RESET_SECONDS. The ratio rule is off in this
    mode (`BreakerConfig.consecutive_failures`)."""
    conf = sentinel_settings.fraud
    return BreakerConfig(
        consecutive_failures=conf.BREAKER_FAILURES,
        cooldown_ms=max(1, round(conf.BREAKER_RESET_SECONDS * 1000)),
        half_open_max=1,
    )


def fraud_probe_ttl_ms() -> int:
    """A trial call nobody reports (its process died) frees its token after this long: twice the
    deadline, at least a second."""
    return max(2 * sentinel_settings.fraud.BRAIN_TIMEOUT_MS, 1000)


def fraud_breaker_prefix() -> str:
    return f"{settings.CACHE_KEY_PREFIX}:fraud:"


@functools.cache
def process_fraud_breaker() -> MemoryBreaker:
    """This process's fraud breaker in embedded mode (no Redis), one per process."""
    return MemoryBreaker(fraud_breaker_config(), fraud_probe_ttl_ms())


def fraud_breaker(redis: RespClient | None) -> Breaker:
    """The breaker the endpoint's client uses: on `redis` (a client of the server's loop) in
    production, else `process_fraud_breaker()`."""
    if redis is None:
        return process_fraud_breaker()
    return RedisBreaker(redis, fraud_breaker_prefix(), fraud_breaker_config(), fraud_probe_ttl_ms())


def fraud_breaker_store() -> contextlib.AbstractAsyncContextManager[Breaker]:
    """The breaker for a one-off read or reset on the running loop (its own Redis client)."""
    return breaker_for_a_moment(settings.REDIS_URL, fraud_breaker, process_fraud_breaker)


def brain_upstream() -> str:
    return f"grpc://{sentinel_settings.fraud.BRAIN_ADDRESS}"


def fraud_circuit_entry() -> dict[str, Any]:
    """The brain's breaker as `/circuit/status` lists it: `{"name": "fraud-brain", "upstream":
    "grpc://host:port", "routes": [], "state", "state_code", "failures" (the current streak),
    "total" (0: no window in this mode), "opened_at_ms", "probes_in_flight"}`. Raises
    `BreakerUnavailable` when Redis does not answer."""

    async def read() -> dict[str, Any]:
        async with fraud_breaker_store() as breaker:
            state = await breaker.state(BREAKER_NAME)
        return {"name": BREAKER_NAME, "upstream": brain_upstream(), "routes": [], **asdict(state),
                "state_code": STATE_CODES[state.state]}  # fmt: skip

    return async_to_sync(read)()


def fraud_circuit_reset() -> bool:
    """Forces the brain's breaker closed; False when it was closed already."""

    async def reset() -> bool:
        async with fraud_breaker_store() as breaker:
            return await breaker.reset(BREAKER_NAME) is not None

    return async_to_sync(reset)()


class FraudCircuitSource:
    """The entry SENTINEL_CIRCUIT_SOURCES names (`fraud.breaker.circuit_source`): visible to every
    authenticated caller (the brain is shared by all tenants), reset by staff."""

    def entries(self, *, is_staff: bool) -> list[dict[str, Any]]:
        return [fraud_circuit_entry()]

    def reset(self, upstream: str) -> tuple[bool, dict[str, Any]] | None:
        """(reset, the entry after it) when `upstream` names this breaker (its name or its
        grpc:// upstream), else None."""
        if upstream not in (BREAKER_NAME, brain_upstream()):
            return None
        was_reset = fraud_circuit_reset()
        return was_reset, fraud_circuit_entry()


circuit_source = FraudCircuitSource()

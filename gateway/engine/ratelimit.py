"""The gateway's two rate limiters (SPEC 2 steps 4 and 5), and the headers that report them.

* ``LocalTokenBuckets``: a token bucket per tenant in this process. It runs first on every request
  and costs a few microseconds, so a burst is cut before it reaches Redis.
* ``RedisWindowLimiter``: at most ``limit`` requests per ``window_ms`` per key, exact across any
  number of gateway processes, in one Redis round trip (an EVALSHA of ``lua/sliding_window.lua``).
  ``MemoryWindowLimiter`` has the same interface and semantics for embedded mode (one process).

Why a sliding log of admitted requests and not another algorithm: the acceptance test is a tenant
limited to 100 per window firing 300 concurrent requests through two processes, which must see
exactly 100 admitted even when the burst takes a second or two to drain.

* GCRA (redis-cell) and token buckets refill continuously: while the burst drains they admit one
  more request every ``window / limit`` (0.6 s at 100/60 s), so a 2 s burst gets about 103 through.
  (That is the right shape for the local burst limiter, which is why step 4 uses a bucket.)
* A fixed window (INCR + EXPIRE, as envoyproxy/ratelimit and Kong OSS do) admits up to twice the
  limit across a window boundary.
* The sliding-window counter (Cloudflare) weights the previous window's count by the overlap; it
  assumes requests were spread evenly and so admits more or fewer than the limit.
* The sliding log stores one ZSET member per admitted request and counts exactly the admissions
  in ``(now - window, now]``. Rejections are not stored, so a key holds at most ``limit`` members
  (a few KB at the default 100/60 s); every step is O(log n) inside one atomic script. Its cost
  is memory proportional to the limit: for limits of tens of thousands per window a counter would
  be the better trade.

Reset semantics (reported as ``reset_ms``): the time until the oldest admitted request leaves the
window, i.e. until one more slot frees, for allowed and rejected requests alike. That is what the
IETF draft (draft-ietf-httpapi-ratelimit-headers-10) defines as ``t`` in ``RateLimit``: the
seconds within which the client may use no more than ``r``. "Time until the whole window resets"
would overstate it, since slots free one by one in a sliding window. ``retry_after_ms`` on a
rejection is the time until enough entries leave for this request's cost to fit, so
``Retry-After`` never points earlier than ``t``, as the draft asks.

Failures: any Redis error, connection error or timeout raises ``LimiterUnavailable`` at once, never
swallowed and never retried here, so the caller applies ``RATE_LIMIT_FAIL_MODE`` (open: rely on
the local bucket; closed: 503). Build the client with ``resp.gateway_redis_client``: it never retries
(a retried EVALSHA after a lost reply would consume a slot twice) and fails fast.

This module is on the proxy's hot path: it must not import Django (a test checks it).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, NamedTuple

from core.ratelimit_headers import LimitState, limit_headers, too_many_requests_headers
from gateway.engine.lua_scripts import LuaScript, lua_file
from gateway.engine.resp import RedisUnavailable, RespClient, RespReplyError

__all__ = [
    "BURST_POLICY",
    "SLIDING_WINDOW",
    "WINDOW_POLICY",
    "BucketDecision",
    "LimiterUnavailable",
    "LocalTokenBuckets",
    "MemoryWindowLimiter",
    "RedisWindowLimiter",
    "WindowDecision",
    "bucket_limit",
    "check_window_arguments",
    "ratelimit_headers",
    "window_decision",
    "window_limit",
]

SLIDING_WINDOW = LuaScript.of(lua_file("sliding_window"))

# Float refills like 0.1 s x 10/s give 0.9999999999999999 tokens: without a tolerance the
# request that should get the refilled token is refused (envoyproxy/envoy#16407 admitted
# ~2,500/s of a 3,000/s limit through rounding in its refill math).
_TOKEN_EPSILON = 1e-9

# The policy names clients see in RateLimit-Policy and RateLimit (a Structured Field String each).
BURST_POLICY = "burst"
WINDOW_POLICY = "window"


class LimiterUnavailable(Exception):
    """The distributed limiter could not decide (Redis down, slow or erroring).

    The caller chooses what that means (``RATE_LIMIT_FAIL_MODE``); the cause is chained.
    """


# A named tuple, not a frozen dataclass: one is built per proxied request (0.3 µs against 0.8 µs).
class BucketDecision(NamedTuple):
    """The local token bucket's answer; ``retry_after_s`` is ``math.inf`` when it never refills."""

    allowed: bool
    remaining: int
    retry_after_s: float


# A named tuple, not a frozen dataclass: one is built per proxied request (0.3 µs against 0.8 µs).
class WindowDecision(NamedTuple):
    """A window limiter's answer, in whole milliseconds (see the module docstring for ``reset_ms``).

    ``window_ms`` lets the headers state the policy (``w``); 0 means unknown and omits it.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    retry_after_ms: int
    window_ms: int = 0


# --- Step 4: local token buckets ------------------------------------------------------------


class LocalTokenBuckets:
    """Token buckets keyed by tenant, in this process only, with a bounded number of keys.

    Each bucket starts full. Beyond ``max_keys`` the least recently used bucket is forgotten:
    an idle tenant's bucket would have refilled anyway, so forgetting it costs (almost) nothing
    and keeps memory flat under a flood of one-off client IPs.
    """

    __slots__ = ("_buckets", "_max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        # key -> [tokens, last refill time]; a list mutated in place, no object per request.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, capacity: int, refill_per_second: float, now: float | None = None) -> BucketDecision:
        """Takes one token from ``key``'s bucket if it has one. ``now`` is a monotonic time (s)."""
        if now is None:
            now = time.monotonic()
        state = self._buckets.get(key)
        if state is None:
            state = self._new_bucket(key, capacity, now)
        else:
            self._buckets.move_to_end(key)
            _refill(state, capacity, refill_per_second, now)
        tokens = state[0]
        if tokens >= 1.0 - _TOKEN_EPSILON:
            state[0] = max(tokens - 1.0, 0.0)
            return BucketDecision(True, int(state[0] + _TOKEN_EPSILON), 0.0)
        if refill_per_second <= 0:
            return BucketDecision(False, 0, math.inf)
        return BucketDecision(False, 0, (1.0 - tokens) / refill_per_second)

    def _new_bucket(self, key: str, capacity: int, now: float) -> list[float]:
        state = [float(capacity), now]
        self._buckets[key] = state
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return state


def _refill(state: list[float], capacity: int, refill_per_second: float, now: float) -> None:
    """Adds the tokens earned since the last refill, capped at ``capacity``."""
    elapsed = now - state[1]
    tokens = state[0]
    # A clock that did not advance (or an injected one that went back) earns nothing.
    if elapsed > 0:
        tokens += elapsed * refill_per_second
        state[1] = now
    # Capped every time, so a tenant whose capacity was just lowered is held to the new one.
    state[0] = min(tokens, float(capacity))


# --- Step 5: the distributed sliding-window limiter -----------------------------------------


def check_window_arguments(limit: int, window_ms: int, cost: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if window_ms < 1:
        raise ValueError(f"window_ms must be >= 1, got {window_ms}")
    if cost < 1:
        raise ValueError(f"cost must be >= 1, got {cost}")


class RedisWindowLimiter:
    """At most ``limit`` admissions per ``window_ms`` per key, shared by every process.

    One EVALSHA per check, atomic inside Redis and timed by Redis' clock. Keys are
    ``prefix + key``; the caller builds ``key`` from tenant and route.
    """

    def __init__(self, redis: RespClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def check(self, key: str, limit: int, window_ms: int, cost: int = 1) -> WindowDecision:
        """Admits or refuses one request of ``cost`` slots; raises ``LimiterUnavailable``."""
        check_window_arguments(limit, window_ms, cost)
        try:
            reply = await self._redis.evalsha(
                SLIDING_WINDOW.sha, SLIDING_WINDOW.source, (self._prefix + key,), (limit, window_ms, cost)
            )
        except (RedisUnavailable, RespReplyError) as exc:
            raise LimiterUnavailable(f"rate limit check failed: {exc!r}") from exc
        return window_decision(reply, limit, window_ms)

    def key_for(self, key: str) -> str:
        """The Redis key of the window that ``check(key, ...)`` uses."""
        return self._prefix + key


def window_decision(reply: list[Any], limit: int, window_ms: int) -> WindowDecision:
    """The decision of a ``sliding_window.lua`` reply {allowed, remaining, reset_ms, retry_after_ms}."""
    allowed, remaining, reset_ms, retry_after_ms = (int(value) for value in reply)
    return WindowDecision(bool(allowed), limit, remaining, reset_ms, retry_after_ms, window_ms)


class MemoryWindowLimiter:
    """``RedisWindowLimiter``'s semantics in this process only (embedded mode, no Redis).

    A deque of admission times per key (at most ``limit`` entries, as rejections are not
    stored); beyond ``max_keys`` keys the least recently used is forgotten, which only matters
    if more than ``max_keys`` keys are active within one window. ``clock`` returns monotonic
    seconds (injectable for tests).
    """

    __slots__ = ("_clock", "_logs", "_max_keys")

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        self._clock = clock
        self._logs: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    async def check(self, key: str, limit: int, window_ms: int, cost: int = 1) -> WindowDecision:
        """Admits or refuses one request of ``cost`` slots. Never raises LimiterUnavailable."""
        # No await inside: on one event loop the check is atomic, like the Lua script in Redis.
        check_window_arguments(limit, window_ms, cost)
        now = self._clock() * 1000.0
        log = self._log_for(key)
        # An entry admitted at s counts during [s, s + window), as in the Lua script.
        horizon = now - window_ms
        while log and log[0] <= horizon:
            log.popleft()
        used = len(log)
        if used + cost > limit:
            retry_after_ms = _ms_until_leaves(log, used + cost - limit - 1, now, window_ms)
            reset_ms = _ms_until_leaves(log, 0, now, window_ms)
            return WindowDecision(False, limit, max(limit - used, 0), reset_ms, retry_after_ms, window_ms)
        log.extend([now] * cost)
        reset_ms = _ms_until_leaves(log, 0, now, window_ms)
        return WindowDecision(True, limit, limit - used - cost, reset_ms, 0, window_ms)

    def _log_for(self, key: str) -> deque[float]:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque()
            if len(self._logs) > self._max_keys:
                self._logs.popitem(last=False)
        else:
            self._logs.move_to_end(key)
        return log


def _ms_until_leaves(log: deque[float], rank: int, now: float, window_ms: int) -> int:
    """Whole ms (rounded up, never early) until entry ``rank`` (0 = oldest) leaves the window."""
    if rank >= len(log):
        return window_ms
    return math.ceil(log[rank] + window_ms - now)


# --- Response headers -----------------------------------------------------------------------
# Built by core.ratelimit_headers, the one builder of every 429's and 503's headers (its docstring
# lists the set and what each field means); these adapters state each limiter's policy in its terms.


def window_limit(decision: WindowDecision, policy_name: str = WINDOW_POLICY) -> LimitState:
    """The distributed window's policy: ``limit`` per ``window_ms`` (announced in whole seconds,
    rounded up: the draft's ``w`` is a non-zero integer, so a 500 ms window is announced as 1)."""
    window_s = max(1, _seconds_up(decision.window_ms)) if decision.window_ms > 0 else 0
    return LimitState(policy_name, decision.limit, window_s, decision.remaining, decision.reset_ms / 1000)


def bucket_limit(decision: BucketDecision, capacity: int, refill_per_second: float) -> LimitState:
    """The local token bucket's policy: ``capacity`` requests per the time the bucket takes to
    refill from empty (``capacity / refill_per_second``, rounded up; unknown when it never
    refills). ``RateLimit-Reset`` is the time until the next token, like the window's."""
    window_s = max(1, math.ceil(capacity / refill_per_second)) if refill_per_second > 0 else 0
    return LimitState(BURST_POLICY, capacity, window_s, decision.remaining, decision.retry_after_s)


def ratelimit_headers(decision: WindowDecision, policy_name: str = WINDOW_POLICY) -> list[tuple[bytes, bytes]]:
    """ASGI headers for a window decision: the legacy trio that deployed clients read, the
    current IETF draft's ``RateLimit-Policy`` and ``RateLimit``, and ``Retry-After`` on refusal
    (``core.ratelimit_headers``). Seconds are rounded up, so a client that waits as told is
    never early. Raises ValueError for a policy name that is not printable ASCII.
    """
    limit = window_limit(decision, policy_name)
    if decision.allowed:
        return limit_headers(limit)
    return too_many_requests_headers(limit, retry_after_s=decision.retry_after_ms / 1000)


def _seconds_up(milliseconds: int) -> int:
    return -(-milliseconds // 1000)

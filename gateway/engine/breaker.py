"""The proxy's circuit breaker per upstream target, shared by every gateway process (SPEC 2 step 8).

* ``RedisBreaker``: the state lives in one Redis hash per upstream; every step (acquire, record,
  reset) is one EVALSHA of a small Lua script (``lua/breaker_*.lua``), atomic inside Redis and
  timed by Redis' clock. Transitions are also PUBLISHed as JSON on ``{prefix}breaker:events``.
* ``MemoryBreaker``: the same API and semantics in one process, for embedded mode.

Why not pybreaker, which the spec names: it cannot sit on an asyncio proxy path (no asyncio
support, one lock around every call, a blocking Redis storage that counts consecutive failures
only); docs/engine.md has the details. What is left is small enough to own: three scripts and their
in-memory twin.

States, per upstream (``BreakerConfig`` holds the numbers):

* closed: requests pass; outcomes are counted in a rolling window of ``window_ms`` (default 10 s,
  as Envoy's outlier-detection interval: long enough to gather ``min_volume`` requests on a quiet
  upstream, short enough that failures from a minute ago do not trip it now). The window is 10
  buckets of ``window_ms / 10`` in the hash: each call touches a fixed number of fields, and the
  window covers the current bucket plus the 9 before it, so it looks back 9-10 s. Once it holds
  at least ``min_volume`` requests and ``failures / total >= failure_threshold`` → open.
* open: refused at once with ``retry_after_ms`` = what is left of ``cooldown_ms``. The first
  acquire after the cooldown moves it to half-open.
* half-open: at most ``half_open_max`` probes in flight fleet-wide. A probe holds a token, a slot in
  the hash stamped with its expiry, taken atomically by acquire(). The first probe to report
  decides: success → closed (window emptied), failure → open with a new cooldown; either way all
  tokens go. A token nobody reports (its process died) expires after ``probe_ttl_ms`` (use the
  request timeout), so a crash cannot wedge the breaker. Other requests are refused like open.

Stale permits: every transition raises the breaker's generation, and a ``Permit`` carries the
generation it was issued in. record() only acts when they match, so an outcome that arrives after
the breaker moved on (the late-outcome race, see ``breaker_record.lua``) changes nothing.

Consecutive mode (``consecutive_failures`` > 0, pybreaker's ``fail_max``; the fraud brain's breaker,
SPEC 6): in closed state the ratio window is not kept at all; a failure adds one to a streak (the
hash field ``s``), a success ends it, and a streak of ``consecutive_failures`` opens the breaker.
Every transition clears the streak. Open and half-open behave as above.

Failures are whatever the caller reports (the forwarder: connect errors, timeouts, 5xx). Any Redis
error, connection error or timeout raises ``BreakerUnavailable`` at once, never retried here: the
gateway fails open and counts it. The client (``RespClient``, built by
``resp.gateway_redis_client``) fails fast and never retries: a retried EVALSHA after a lost reply
would count an outcome twice or take two probe tokens.

Keys: ``{prefix}breaker:{upstream}``, one hash per upstream with a TTL refreshed on every write,
so the breakers of removed upstreams disappear. Pub/sub is only a notification for dashboards and
metrics; the truth is the hash, which any process reads with state() or states() (a peer whose
pods only listened for events missed the transitions made before they started).

This module is on the proxy's hot path: it must not import Django (a test checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from gateway.engine.lua_scripts import LuaScript, lua_file, script_function
from gateway.engine.resp import RedisUnavailable, RespClient, RespReplyError, gateway_redis_client

__all__ = [
    "ACQUIRE",
    "RECORD_BATCH_MAX",
    "STATE_CODES",
    "Breaker",
    "BreakerConfig",
    "BreakerState",
    "BreakerUnavailable",
    "MemoryBreaker",
    "Permit",
    "RedisBreaker",
    "Transition",
    "breaker_for_a_moment",
    "permit_from",
]

logger = logging.getLogger(__name__)

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
# Values of the Prometheus gauge sentinel_circuit_breaker_state.
STATE_CODES: Final[Mapping[str, int]] = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

# The rolling window is this many buckets of window_ms / WINDOW_BUCKETS each.
WINDOW_BUCKETS: Final = 10
# Idle hashes live at least this long: a breaker left open by a dead upstream must still be open
# (and then half-open) when traffic comes back, not quietly closed because its key expired.
_MIN_KEY_TTL_MS: Final = 3_600_000
# Outcomes sent in one EVALSHA at most: a script blocks Redis while it runs (~10 µs an outcome).
RECORD_BATCH_MAX: Final = 128


class BreakerUnavailable(Exception):
    """Redis could not be asked; the caller decides (the gateway fails open and counts it)."""


@dataclass(frozen=True)
class BreakerConfig:
    """The numbers of SPEC 2 step 8 (``gateway.runtime.breaker_config_from`` reads them from the settings)."""

    failure_threshold: float = 0.5
    min_volume: int = 10
    cooldown_ms: int = 30_000
    half_open_max: int = 5
    window_ms: int = 10_000
    # > 0: open after this many consecutive failures instead of the ratio rule (which is then
    # off: nothing is counted in the window). 0: the ratio rule, the gateway's mode.
    consecutive_failures: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_threshold <= 1.0:
            raise ValueError(f"failure_threshold must be within 0..1, got {self.failure_threshold}")
        for name in ("min_volume", "cooldown_ms", "half_open_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.consecutive_failures < 0:
            raise ValueError(f"consecutive_failures must be >= 0, got {self.consecutive_failures}")
        if self.window_ms < WINDOW_BUCKETS:
            raise ValueError(f"window_ms must be >= {WINDOW_BUCKETS}, got {self.window_ms}")

    @property
    def bucket_ms(self) -> int:
        return -(-self.window_ms // WINDOW_BUCKETS)


# A named tuple, not a frozen dataclass: one is built per proxied request (0.3 µs against 0.8 µs).
class Permit(NamedTuple):
    """acquire()'s answer. Pass it back to record() with the outcome when ``allowed``."""

    allowed: bool
    state: str
    probe: bool
    generation: int
    retry_after_ms: int


@dataclass(frozen=True)
class Transition:
    """A state change, as returned by record()/reset() and published as JSON."""

    upstream: str
    from_state: str
    to_state: str
    at_ms: int

    @classmethod
    def from_json(cls, raw: str | bytes) -> Transition:
        data = json.loads(raw)
        return cls(str(data["upstream"]), str(data["from_state"]), str(data["to_state"]), int(data["at_ms"]))

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class BreakerState:
    """What a dashboard shows. An open breaker whose cooldown is over reads as half_open: that is
    what the next request will find. In consecutive mode ``failures`` is the current streak and
    ``total`` is 0 (no window is kept)."""

    state: str
    failures: int
    total: int
    opened_at_ms: int | None
    probes_in_flight: int


class Breaker(Protocol):
    """What the gateway needs from either implementation."""

    async def acquire(self, upstream: str) -> Permit: ...

    async def record(self, upstream: str, permit: Permit, success: bool) -> Transition | None: ...

    async def state(self, upstream: str) -> BreakerState: ...

    async def states(self, upstreams: Iterable[str]) -> dict[str, BreakerState]: ...

    async def reset(self, upstream: str) -> Transition | None: ...


@dataclass
class _Entry:
    """One upstream's breaker: MemoryBreaker's state, and the parsed form of a Redis hash."""

    state: str
    generation: int
    opened_at_ms: int | None = None
    # consecutive failures so far in closed state (consecutive mode only)
    streak: int = 0
    # slot -> (epoch of the bucket_ms slice it holds, failures, total)
    buckets: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    # probe slot -> expiry (ms)
    probes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> _Entry | None:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "st" not in fields:
            return None
        entry = cls(fields["st"], int(fields.get("gen", 0)))
        if "opened" in fields:
            entry.opened_at_ms = int(fields["opened"])
        entry.streak = int(fields.get("s", 0))
        for slot in range(WINDOW_BUCKETS):
            if f"e{slot}" in fields:
                entry.buckets[slot] = (
                    int(fields[f"e{slot}"]),
                    int(fields.get(f"f{slot}", 0)),
                    int(fields.get(f"t{slot}", 0)),
                )
        for name, value in fields.items():
            if name[0] == "p" and name[1:].isdigit():
                entry.probes[int(name[1:])] = int(value)
        return entry

    def count(self, now: int, bucket_ms: int, success: bool) -> None:
        epoch = now // bucket_ms
        slot = epoch % WINDOW_BUCKETS
        held_epoch, failures, total = self.buckets.get(slot, (-1, 0, 0))
        if held_epoch != epoch:  # the slot still holds an older slice of time: recycle it
            failures, total = 0, 0
        self.buckets[slot] = (epoch, failures + (0 if success else 1), total + 1)

    def window(self, now: int, bucket_ms: int) -> tuple[int, int]:
        """(failures, total) over the current bucket and the WINDOW_BUCKETS - 1 before it."""
        oldest = now // bucket_ms - WINDOW_BUCKETS
        failures = total = 0
        for epoch, bucket_failures, bucket_total in self.buckets.values():
            if epoch > oldest:
                failures += bucket_failures
                total += bucket_total
        return failures, total

    def summary(self, now: int, config: BreakerConfig) -> BreakerState:
        if config.consecutive_failures:
            failures, total = self.streak, 0
        else:
            failures, total = self.window(now, config.bucket_ms)
        state = self.state
        if state == OPEN and self.opened_at_ms is not None and now >= self.opened_at_ms + config.cooldown_ms:
            state = HALF_OPEN
        probes = sum(1 for expires in self.probes.values() if expires > now)
        return BreakerState(state, failures, total, self.opened_at_ms if state != CLOSED else None, probes)


_NEVER_SEEN = BreakerState(CLOSED, 0, 0, None, 0)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def permit_from(reply: list[Any]) -> Permit:
    """The permit of a ``breaker_acquire.lua`` reply {allowed, state, probe, generation, retry_after_ms}."""
    allowed, state, probe, generation, retry_after_ms = reply
    return Permit(bool(allowed), _text(state), bool(probe), int(generation), int(retry_after_ms))


# A named tuple, not a frozen dataclass: one is built per proxied request (0.3 µs against 0.8 µs).
class _Outcome(NamedTuple):
    """One record() waiting for the end of the loop's turn."""

    upstream: str
    generation: int
    success: bool
    transition: asyncio.Future[Transition | None]


def _transition(upstream: str, reply: list[Any]) -> Transition | None:
    """A {from_state, to_state, at_ms} script reply; from_state '' means nothing changed."""
    from_state = _text(reply[0])
    if not from_state:
        return None
    return Transition(upstream, from_state, _text(reply[1]), int(reply[2]))


def _step(step: str) -> str:
    """A breaker step's whole script: the shared prelude, then the step."""
    return lua_file("breaker_common", f"breaker_{step}")


ACQUIRE = LuaScript.of(_step("acquire"))
_RECORD = LuaScript.of(_step("record"))
_RESET = LuaScript.of(_step("reset"))
# Several outcomes in one EVALSHA: breaker_record.lua run once per outcome, in order, as a
# function of the composed script (`lua_scripts.script_function`), so each outcome is counted
# exactly as a lone call would count it.
#   KEYS[i]          the hash of outcome i's upstream
#   ARGV[1..4]       channel, key TTL (ms), half_open_max, window buckets (breaker_common.lua)
#   ARGV[5..8]       bucket_ms, min_volume, failure_threshold, consecutive_failures (breaker_record.lua)
#   ARGV[9 + 3(i-1) ..]  outcome i: upstream, the permit's generation, success (1|0)
#   Reply            one {from_state, to_state, at_ms} per outcome, as breaker_record.lua's
_RECORD_MANY = LuaScript.of(
    script_function("record_one", _RECORD.source)
    + """
local replies = {}
for i = 1, #KEYS do
  local at = 9 + 3 * (i - 1)
  replies[i] = record_one({KEYS[i]}, {ARGV[1], ARGV[at], ARGV[2], ARGV[3], ARGV[4],
    ARGV[at + 1], ARGV[at + 2], ARGV[5], ARGV[6], ARGV[7], ARGV[8]})
end
return replies
"""
)


class RedisBreaker:
    """The fleet-wide breaker: one Redis round trip per acquire(); outcomes recorded in batches.

    record() calls made in one turn of the event loop are sent together at its end, as one EVALSHA
    of ``breaker_record.lua`` run once per outcome in the order they were reported
    (``_RECORD_MANY``), at most ``RECORD_BATCH_MAX`` a call: under load, a share of one round trip
    per outcome instead of a round trip each, with the same counting as one call per outcome.
    Each caller still gets the transition its own outcome caused.
    """

    def __init__(self, redis: RespClient, prefix: str, config: BreakerConfig, probe_ttl_ms: int = 30_000) -> None:
        if probe_ttl_ms < 1:
            raise ValueError(f"probe_ttl_ms must be >= 1, got {probe_ttl_ms}")
        self.redis = redis
        self.prefix = prefix
        self.config = config
        self.probe_ttl_ms = probe_ttl_ms
        self.channel = f"{prefix}breaker:events"
        key_ttl_ms = max(_MIN_KEY_TTL_MS, 2 * (config.window_ms + config.cooldown_ms + probe_ttl_ms))
        # ARGV[3..5] of every script (breaker_common.lua), built once.
        self._common = (key_ttl_ms, config.half_open_max, WINDOW_BUCKETS)
        self._acquire_args = (config.cooldown_ms, probe_ttl_ms)
        # repr() keeps every digit of the float, so 3 of 10 at a threshold of 0.3 trips in Lua too.
        self._record_args = (
            config.bucket_ms,
            config.min_volume,
            repr(config.failure_threshold),
            config.consecutive_failures,
        )
        # Outcomes reported during this turn of the loop, sent at its end (_send_outcomes).
        self._outcomes: list[_Outcome] = []
        self._sending: set[asyncio.Task[None]] = set()

    def key_for(self, upstream: str) -> str:
        return f"{self.prefix}breaker:{upstream}"

    def acquire_arguments(self, upstream: str) -> tuple[int | str, ...]:
        """ARGV of ``ACQUIRE`` for ``upstream`` (its key is ``key_for(upstream)``): for a caller
        that runs the step inside a script of its own (``gateway.engine.gate``)."""
        return (self.channel, upstream, *self._common, *self._acquire_args)

    async def acquire(self, upstream: str) -> Permit:
        """May a request go to ``upstream`` now? Raises ``BreakerUnavailable``."""
        try:
            reply = await self.redis.evalsha(
                ACQUIRE.sha, ACQUIRE.source, (self.key_for(upstream),), self.acquire_arguments(upstream)
            )
        except (RedisUnavailable, RespReplyError) as exc:
            raise BreakerUnavailable(f"circuit breaker call failed: {exc!r}") from exc
        return permit_from(reply)

    async def record(self, upstream: str, permit: Permit, success: bool) -> Transition | None:
        """Reports the outcome of a request ``permit`` let through; the transition it caused, if
        any. Sent at the end of this turn of the loop with the others reported meanwhile (see the
        class); raises ``BreakerUnavailable`` when that call fails."""
        if not permit.allowed:
            return None  # a refusal reached no upstream: nothing to count
        loop = asyncio.get_running_loop()
        if not self._outcomes:
            loop.call_soon(self._send_outcomes)
        outcome = _Outcome(upstream, permit.generation, success, loop.create_future())
        self._outcomes.append(outcome)
        return await outcome.transition

    def _send_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        for start in range(0, len(outcomes), RECORD_BATCH_MAX):
            task = asyncio.ensure_future(self._record_batch(outcomes[start : start + RECORD_BATCH_MAX]))
            self._sending.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._sending.discard)

    async def _record_batch(self, outcomes: list[_Outcome]) -> None:
        arguments: list[int | str] = [self.channel, *self._common, *self._record_args]
        for outcome in outcomes:
            arguments += (outcome.upstream, outcome.generation, int(outcome.success))
        keys = [self.key_for(outcome.upstream) for outcome in outcomes]
        try:
            replies = await self.redis.evalsha(_RECORD_MANY.sha, _RECORD_MANY.source, keys, arguments)
        except (RedisUnavailable, RespReplyError) as exc:
            failure = BreakerUnavailable(f"circuit breaker call failed: {exc!r}")
            for outcome in outcomes:
                if not outcome.transition.done():
                    outcome.transition.set_exception(failure)
            return
        except BaseException:  # cancelled (the loop is closing): nobody must wait for ever
            for outcome in outcomes:
                outcome.transition.cancel()
            raise
        for outcome, reply in zip(outcomes, replies, strict=True):
            if not outcome.transition.done():  # its caller may have been cancelled meanwhile
                outcome.transition.set_result(_transition(outcome.upstream, reply))

    async def reset(self, upstream: str) -> Transition | None:
        """Admin action: force closed, empty the window, void every permit out."""
        return _transition(upstream, await self._run(_RESET, upstream, ()))

    async def state(self, upstream: str) -> BreakerState:
        return (await self.states([upstream]))[upstream]

    async def states(self, upstreams: Iterable[str]) -> dict[str, BreakerState]:
        """Every upstream's state in one round trip (a pipeline of HGETALLs and Redis' TIME)."""
        names = list(dict.fromkeys(upstreams))
        commands: list[list[str]] = [["TIME"], *(["HGETALL", self.key_for(upstream)] for upstream in names)]
        try:
            replies = await self.redis.pipeline(commands)
        except RedisUnavailable as exc:
            raise BreakerUnavailable(f"circuit breaker state read failed: {exc!r}") from exc
        failed = next((reply for reply in replies if isinstance(reply, RespReplyError)), None)
        if failed is not None:
            raise BreakerUnavailable(f"circuit breaker state read failed: {failed!r}")
        seconds, micros = replies[0]
        now = int(seconds) * 1000 + int(micros) // 1000
        result = {}
        for upstream, raw in zip(names, replies[1:], strict=True):
            entry = _Entry.from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))
            result[upstream] = _NEVER_SEEN if entry is None else entry.summary(now, self.config)
        return result

    async def load_scripts(self) -> None:
        """Optional, at startup: saves the NOSCRIPT round trip on the first call of each script."""
        try:
            for script in (ACQUIRE, _RECORD_MANY, _RESET):
                await self.redis.script_load(script.source)
        except (RedisUnavailable, RespReplyError) as exc:
            raise BreakerUnavailable(f"circuit breaker script load failed: {exc!r}") from exc

    async def _run(self, script: LuaScript, upstream: str, args: tuple[int | str, ...]) -> list[Any]:
        arguments = (self.channel, upstream, *self._common, *args)
        try:
            reply = await self.redis.evalsha(script.sha, script.source, (self.key_for(upstream),), arguments)
        except (RedisUnavailable, RespReplyError) as exc:
            raise BreakerUnavailable(f"circuit breaker call failed: {exc!r}") from exc
        return list(reply)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryBreaker:
    """The same breaker for one process (embedded mode), on one event loop.

    Every method runs to completion without awaiting, so concurrent tasks see each step as atomic
    without a lock. ``listeners`` are called with each ``Transition``, the in-process stand-in for
    the Redis channel; one that raises is logged and does not break the breaker.
    """

    def __init__(
        self,
        config: BreakerConfig,
        probe_ttl_ms: int = 30_000,
        *,
        listeners: Iterable[Callable[[Transition], None]] = (),
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        if probe_ttl_ms < 1:
            raise ValueError(f"probe_ttl_ms must be >= 1, got {probe_ttl_ms}")
        self.config = config
        self.probe_ttl_ms = probe_ttl_ms
        self.listeners = list(listeners)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    async def acquire(self, upstream: str) -> Permit:
        now = self._clock()
        entry = self._entries.get(upstream)
        if entry is None:
            entry = self._entries[upstream] = _Entry(CLOSED, now)
        if entry.state == CLOSED:
            return Permit(True, CLOSED, False, entry.generation, 0)
        if entry.state == OPEN:
            left = (entry.opened_at_ms or 0) + self.config.cooldown_ms - now
            if left > 0:
                return Permit(False, OPEN, False, entry.generation, left)
            self._move(upstream, entry, HALF_OPEN, now)
        for slot in range(1, self.config.half_open_max + 1):
            expires = entry.probes.get(slot)
            if expires is None or expires <= now:
                entry.probes[slot] = now + self.probe_ttl_ms
                return Permit(True, HALF_OPEN, True, entry.generation, 0)
        soonest = min(entry.probes.values())
        return Permit(False, HALF_OPEN, False, entry.generation, max(soonest - now, 1))

    async def record(self, upstream: str, permit: Permit, success: bool) -> Transition | None:
        entry = self._entries.get(upstream)
        # The late-outcome race (see breaker_record.lua): only the issuing generation counts.
        if not permit.allowed or entry is None or entry.generation != permit.generation:
            return None
        now = self._clock()
        if entry.state == HALF_OPEN:
            entry.probes.clear()
            if success:
                entry.buckets.clear()
                entry.opened_at_ms = None
                return self._move(upstream, entry, CLOSED, now)
            entry.opened_at_ms = now
            return self._move(upstream, entry, OPEN, now)
        if entry.state != CLOSED:
            return None
        if self.config.consecutive_failures:
            entry.streak = 0 if success else entry.streak + 1
            if entry.streak < self.config.consecutive_failures:
                return None
            entry.opened_at_ms = now
            return self._move(upstream, entry, OPEN, now)
        entry.count(now, self.config.bucket_ms, success)
        failures, total = entry.window(now, self.config.bucket_ms)
        if total >= self.config.min_volume and failures / total >= self.config.failure_threshold:
            entry.buckets.clear()
            entry.opened_at_ms = now
            return self._move(upstream, entry, OPEN, now)
        return None

    async def reset(self, upstream: str) -> Transition | None:
        entry = self._entries.get(upstream)
        if entry is None:
            return None
        entry.buckets.clear()
        entry.probes.clear()
        entry.opened_at_ms = None
        entry.streak = 0
        if entry.state == CLOSED:
            return None
        return self._move(upstream, entry, CLOSED, self._clock())

    async def state(self, upstream: str) -> BreakerState:
        entry = self._entries.get(upstream)
        return _NEVER_SEEN if entry is None else entry.summary(self._clock(), self.config)

    async def states(self, upstreams: Iterable[str]) -> dict[str, BreakerState]:
        return {upstream: await self.state(upstream) for upstream in upstreams}

    def _move(self, upstream: str, entry: _Entry, to_state: str, now: int) -> Transition:
        transition = Transition(upstream, entry.state, to_state, now)
        entry.state = to_state
        entry.streak = 0
        entry.generation = max(entry.generation + 1, now)
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception:  # a dashboard hook must not break the proxy
                logger.exception("circuit breaker listener failed for %s", upstream)
        return transition


@contextlib.asynccontextmanager
async def breaker_for_a_moment(
    redis_url: str | None, on_redis: Callable[[RespClient], Breaker], in_process: Callable[[], Breaker]
) -> AsyncIterator[Breaker]:
    """A breaker for a one-off read or reset on the running loop (an admin page, an API call):
    with `redis_url`, `on_redis(client)` on a client of this loop's own, closed on exit (the
    proxy's clients belong to the server's loop); without, `in_process()`, the process's own.
    Opening it does no I/O; the breaker's calls raise `BreakerUnavailable` when Redis does not
    answer."""
    if not redis_url:
        yield in_process()
        return
    redis = gateway_redis_client(redis_url)
    try:
        yield on_redis(redis)
    finally:
        await redis.aclose()

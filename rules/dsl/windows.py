"""Sliding-window stores behind rule windows (``count(5m by ip)``, ``sum(amount, 1h)``).

A store records one event and returns the window's aggregate in one atomic step, so that of
many workers recording concurrently exactly one sees each value (one sees 5, one sees 6, ...):
a threshold crossing fires once. Entries are keyed by event id, so recording is idempotent,
and an entry is in the window while ``entry time > now - window``. Keys are built by
``CompiledRule`` as ``{tenant}:{rule}:{window key}:{group}``.

* ``MemoryWindowStore``: in-process (tests, dry runs, a single worker); thread-safe.
* ``RedisWindowStore``: shared by all workers; one Lua script call (EVALSHA) per record, on a
  sorted set ``sentinel:rules:win:{<key>}`` (member = event id, score = time) plus, for sums, a
  companion hash ``...:v`` (member = event id, value = amount) pruned together. The braces are a
  Redis Cluster hash tag keeping both keys in one slot. Each key's TTL is the window's length.
"""

from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from redis import Redis

LUA_DIR: Final = Path(__file__).with_name("lua")
COUNT_SCRIPT: Final = (LUA_DIR / "window_count.lua").read_text(encoding="utf-8")
SUM_SCRIPT: Final = (LUA_DIR / "window_sum.lua").read_text(encoding="utf-8")
DEFAULT_PREFIX: Final = "sentinel:rules:win:"


class WindowStore(Protocol):
    """Record-and-aggregate, atomically. ``member`` is the event id; ``now`` seconds."""

    def count(self, key: str, window_s: float, now: float, member: str) -> int:
        """Adds ``member`` at ``now`` unless present; the number of members in the window."""
        ...

    def sum(self, key: str, window_s: float, now: float, member: str, value: float) -> float:
        """Adds ``member`` with ``value`` unless present; the sum of the window's values."""
        ...


@dataclass(slots=True)
class _Window:
    window_s: float
    entries: dict[str, tuple[float, float]] = field(default_factory=dict)  # member -> (time, value)
    by_time: list[tuple[float, str]] = field(default_factory=list)  # heap, to prune oldest first
    newest: float = -math.inf

    def record(self, now: float, member: str, value: float) -> None:
        cutoff = now - self.window_s
        while self.by_time and self.by_time[0][0] <= cutoff:
            _, old = heapq.heappop(self.by_time)
            self.entries.pop(old, None)
        if member not in self.entries:
            self.entries[member] = (now, value)
            heapq.heappush(self.by_time, (now, member))
            self.newest = max(self.newest, now)


class MemoryWindowStore:
    """In-process windows; every call prunes its key, and idle keys are swept now and then."""

    SWEEP_EVERY: Final = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._calls = 0

    def count(self, key: str, window_s: float, now: float, member: str) -> int:
        with self._lock:
            return len(self._record(key, window_s, now, member, 0.0).entries)

    def sum(self, key: str, window_s: float, now: float, member: str, value: float) -> float:
        with self._lock:
            window = self._record(key, window_s, now, member, value)
            return math.fsum(amount for _, amount in window.entries.values())

    def __len__(self) -> int:
        """The number of live keys (for tests and metrics)."""
        return len(self._windows)

    def _record(self, key: str, window_s: float, now: float, member: str, value: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(window_s)
        window.record(now, member, value)
        self._calls += 1
        if self._calls % self.SWEEP_EVERY == 0:
            self._sweep(now)
        return window

    def _sweep(self, now: float) -> None:
        # Keys that no event touched for a whole window would otherwise live forever.
        idle = [key for key, window in self._windows.items() if window.newest <= now - window.window_s]
        for key in idle:
            del self._windows[key]


class RedisWindowStore:
    """Windows in Redis, shared by every worker; exact and atomic (one Lua script per call).

    ``client`` is a sync ``redis.Redis`` (either ``decode_responses`` setting works).
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        # register_script: EVALSHA by SHA, loading the script again on NOSCRIPT (after a restart).
        self._count = client.register_script(COUNT_SCRIPT)
        self._sum = client.register_script(SUM_SCRIPT)

    def redis_key(self, key: str) -> str:
        """The sorted set's name; the sum's companion hash adds ``:v``."""
        return f"{self.prefix}{{{key}}}"

    def count(self, key: str, window_s: float, now: float, member: str) -> int:
        args: list[str | int] = [repr(float(now - window_s)), repr(float(now)), member, _ttl_ms(window_s)]
        return int(self._count(keys=[self.redis_key(key)], args=args))

    def sum(self, key: str, window_s: float, now: float, member: str, value: float) -> float:
        name = self.redis_key(key)
        args: list[str | int] = [
            repr(float(now - window_s)),
            repr(float(now)),
            member,
            repr(float(value)),
            _ttl_ms(window_s),
        ]
        return float(self._sum(keys=[name, name + ":v"], args=args))


def _ttl_ms(window_s: float) -> int:
    return max(1, math.ceil(window_s * 1000))

"""Timing a function over events, one event at a time, in this process: a warm-up, then the
median of REPEATS repeats, each taken again when other processes took the cores meanwhile."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common.cpu import CpuUse, cpu_between, cpu_snapshot
from bench.rules.config import OTHER_LIMIT, REPEATS, SERVERS


@dataclass(frozen=True)
class Timing:
    """A figure: the median µs per event, each repeat's, the most other processes used during a
    kept repeat (cores), and µs of CPU per event by group (`bench`, `redis`) in the median repeat."""

    us: float
    repeats: tuple[float, ...]
    other_cores: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events per second."""
        return 1e6 / self.us

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats."""
        return (max(self.repeats) - min(self.repeats)) / self.us


Events = list[dict[str, Any]]


class _Cycle:
    """Calls a function on the events in turn, from where the last call stopped."""

    def __init__(self, fn: Callable[[dict[str, Any]], object], events: Events) -> None:
        self.fn, self.events, self.position = fn, events, 0

    def run(self, count: int) -> None:
        while count > 0:
            chunk = self.events[self.position : self.position + count]
            for event in chunk:
                self.fn(event)
            count -= len(chunk)
            self.position = (self.position + len(chunk)) % len(self.events)


def _batch_size(cycle: _Cycle, seconds: float) -> int:
    """Warms up (a quarter of `seconds`, at least 20 events); the events in ~20 ms of work, so that
    the clock is read that often."""
    done, started = 0, time.perf_counter()
    while done < 20 or time.perf_counter() - started < seconds / 4:
        cycle.run(10)
        done += 10
    return max(1, int(0.02 / ((time.perf_counter() - started) / done)))


def _repeat(cycle: _Cycle, batch: int, seconds: float) -> tuple[float, int, CpuUse]:
    """One repeat of at least `seconds`: (µs per event, events, the CPU used meanwhile). Taken
    again (twice at most) when other processes used more than OTHER_LIMIT core."""
    for attempt in range(3):
        gc.collect()
        before = cpu_snapshot()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            cycle.run(batch)
            done += batch
        elapsed = time.perf_counter() - started
        use = cpu_between(before, cpu_snapshot(), {}, named=SERVERS)
        if use.cores["other"] <= OTHER_LIMIT or attempt == 2:
            break
        print(f"   disturbed ({use.cores['other']:.2f} core elsewhere); again", flush=True)
        time.sleep(2)
    return elapsed / done * 1e6, done, use


def time_per_event(fn: Callable[[dict[str, Any]], object], events: Events, seconds: float) -> Timing:
    """`fn` timed over `events` (cycled through): a warm-up, then REPEATS repeats of at least
    `seconds` each; the clock is read every ~20 ms of work."""
    cycle = _Cycle(fn, events)
    batch = _batch_size(cycle, seconds)
    results = []
    for _ in range(REPEATS):
        per_event, done, use = _repeat(cycle, batch, seconds)
        cpu = {name: use.seconds(name) / done * 1e6 for name in ("bench", "redis")}
        results.append((per_event, use.cores["other"], cpu))
    median = sorted(results, key=lambda r: r[0])[len(results) // 2]
    return Timing(median[0], tuple(r[0] for r in results), max(r[1] for r in results), median[2])

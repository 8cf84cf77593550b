"""Per-second traffic buckets in process memory: the proxy's request sink for the live dashboard.

`LiveRecorder` is a plain callable the site hands to the proxy (through `request_sinks`). For each
`RequestRecord` it adds to the bucket of the current second: counts by status class, 429s and
503s, a fixed latency histogram (for the percentiles), and counts per tenant and per route, each
bounded to `TOP_K` distinct keys per second (more go under `OTHER`). Constant time, no I/O, no
lock: the sink runs on the event loop thread and nothing else writes the current bucket.

A bucket is finished once its second is over; `take_finished()` hands finished buckets to the
pusher once a second (`observability.dashboard.fleet`: to Redis, or to memory in embedded mode).
Buckets travel as JSON (`Bucket.to_json` / `Bucket.from_json`) and merge by addition.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.engine.proxy import RequestRecord

WINDOW_SECONDS = 60
# Distinct tenants and routes kept per second and per process; one second of a flood from many
# anonymous IPs must not grow a bucket without bound.
TOP_K = 50
OTHER = "(other)"
# Upper bounds (ms) of the latency histogram's buckets: 0.25 ms doubling-ish to 60 s, the last
# one open. A percentile read from it is off by at most its bucket's width (interpolated as
# Prometheus' histogram_quantile does), ample for a chart.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 30000, 60000, math.inf,
)  # fmt: skip


@dataclass
class Counts:
    """Requests of one second (fleet-wide, or one tenant's): by status class, 429, 503, latency."""

    requests: int = 0
    errors: int = 0  # 5xx: the client got no answer from the service
    client_errors: int = 0  # 4xx
    s429: int = 0
    s503: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))

    def add(self, status: int, latency_ms: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
            self.s503 += status == 503
        elif status >= 400:
            self.client_errors += 1
            self.s429 += status == 429
        self.latency[bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1

    def merge(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.client_errors += other.client_errors
        self.s429 += other.s429
        self.s503 += other.s503
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]

    def to_json(self) -> list[Any]:
        return [self.requests, self.errors, self.client_errors, self.s429, self.s503, self.latency]

    @classmethod
    def from_json(cls, data: list[Any]) -> Counts:
        requests, errors, client_errors, s429, s503, latency = data
        if len(latency) != len(LATENCY_BOUNDS_MS):  # a process of another version: no percentiles
            latency = [0] * len(LATENCY_BOUNDS_MS)
        return cls(requests, errors, client_errors, s429, s503, list(latency))


@dataclass
class Bucket:
    """One second of one process (or, merged, of the fleet).

    `tenants` is keyed by the proxy's tenant key (a tenant's UUID, `ip:<address>` or `user:<id>`);
    `routes` by `"<tenant key>|<route prefix>"`, so a tenant's view can keep only its own routes.
    """

    second: int
    total: Counts = field(default_factory=Counts)
    tenants: dict[str, Counts] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)

    def add(self, record: RequestRecord) -> None:
        tenant = record.tenant_key or "anonymous"
        self.total.add(record.status, record.latency_ms)
        counts = self.tenants.get(tenant)
        if counts is None:
            tenant = tenant if len(self.tenants) < TOP_K else OTHER
            counts = self.tenants.setdefault(tenant, Counts())
        counts.add(record.status, record.latency_ms)
        route = f"{tenant}|{record.route or 'unmatched'}"
        if route in self.routes or len(self.routes) < TOP_K:
            self.routes[route] = self.routes.get(route, 0) + 1
        else:
            self.routes[f"{OTHER}|{OTHER}"] = self.routes.get(f"{OTHER}|{OTHER}", 0) + 1

    def merge(self, other: Bucket) -> None:
        self.total.merge(other.total)
        for key, counts in other.tenants.items():
            self.tenants.setdefault(key, Counts()).merge(counts)
        for key, count in other.routes.items():
            self.routes[key] = self.routes.get(key, 0) + count

    def to_json(self) -> dict[str, Any]:
        return {
            "s": self.second,
            "t": self.total.to_json(),
            "tn": {key: counts.to_json() for key, counts in self.tenants.items()},
            "r": self.routes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bucket:
        tenants = {key: Counts.from_json(value) for key, value in data["tn"].items()}
        return cls(int(data["s"]), Counts.from_json(data["t"]), tenants, dict(data["r"]))


def percentile(histogram: list[int], q: float) -> float | None:
    """The `q` quantile (0-1) of a latency histogram on `LATENCY_BOUNDS_MS`, in ms; None when it
    is empty. Linear interpolation inside the bucket that holds the rank, as Prometheus'
    `histogram_quantile` does; a rank in the open last bucket reads as its lower bound."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_MS[index]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS_MS[-2]


class LiveRecorder:
    """The request sink: adds each record to the current second's bucket (see the module).

    `clock` returns epoch seconds (a float); tests pass their own.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, keep: int = WINDOW_SECONDS) -> None:
        self.clock = clock
        self.current = Bucket(int(clock()))
        # Bounded: seconds nobody took (Redis down) are dropped oldest first.
        self._finished: collections.deque[Bucket] = collections.deque(maxlen=keep)

    def __call__(self, record: RequestRecord) -> None:
        second = int(self.clock())
        if second != self.current.second:
            self._rotate(second)
        self.current.add(record)

    def _rotate(self, second: int) -> None:
        self._finished.append(self.current)
        self.current = Bucket(second)

    def take_finished(self) -> list[Bucket]:
        """The buckets whose second is over and that were not taken yet, oldest first. A second
        without requests has no bucket; the reader treats a missing second as zero."""
        if self.current.second < int(self.clock()):
            self._rotate(int(self.clock()))
        taken = list(self._finished)
        self._finished.clear()
        return taken


def merge_seconds(buckets: Iterable[Bucket]) -> dict[int, Bucket]:
    """Buckets of many processes merged per second: `{second: fleet bucket}`."""
    merged: dict[int, Bucket] = {}
    for bucket in buckets:
        into = merged.get(bucket.second)
        if into is None:
            merged[bucket.second] = into = Bucket(bucket.second)
        into.merge(bucket)
    return merged

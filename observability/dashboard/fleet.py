"""Where the web processes' per-second buckets meet: Redis in production mode, memory in embedded.

Production: once a second each web process pushes its finished seconds and its gauges in one
pipelined round trip: `HSET <prefix>:dash:sec:<second> <process> <bucket JSON>` and
`HSET <prefix>:dash:gauge:<second> <process> <gauges JSON>`, each key expiring after
`KEY_TTL_SECONDS`. Any process then reads the fleet's last minute with one pipelined `HGETALL`
per second (`RedisFleet.window`). Embedded mode has one web process: `MemoryFleet` reads its
recorder.

Both are synchronous and called from a worker thread (`sync_to_async`), never on the proxy's path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from observability.dashboard.live import WINDOW_SECONDS, Bucket, merge_seconds

# Long enough for a reader to see the whole window, short enough that a dead process's seconds
# are gone a minute after it.
KEY_TTL_SECONDS = WINDOW_SECONDS + 30
# A process that has not pushed its gauges for this long is no longer counted.
GAUGE_STALE_SECONDS = 3
# The viewers' set lives while someone reads it (the producer, every second).
VIEWERS_TTL_SECONDS = 120


@dataclass(frozen=True)
class Gauges:
    """One web process's sampled gauges: requests in flight and pressure (0-100)."""

    process: str
    in_flight: int
    pressure: float


@dataclass
class FleetWindow:
    """The fleet's last `WINDOW_SECONDS`: merged buckets by second, and each live process's gauges."""

    now: int  # the first second not included (the one in progress)
    seconds: dict[int, Bucket] = field(default_factory=dict)
    gauges: list[Gauges] = field(default_factory=list)


class Fleet(Protocol):
    def push(self, buckets: list[Bucket], gauges: Gauges) -> None: ...

    def window(self, now: int) -> FleetWindow: ...

    def viewer_touch(self, tenant_uuid: str, tenant_slug: str, *, ttl: int) -> None:
        """Marks a tenant as watched for `ttl` seconds."""

    def viewers(self) -> list[tuple[str, str]]:
        """(uuid, slug) of every tenant watched now."""


class MemoryFleet:
    """Embedded mode: the fleet is this process, whose pusher hands its buckets here instead of
    to Redis (so the recorder itself is only ever touched on the event loop's thread)."""

    def __init__(self) -> None:
        self._buckets: dict[int, Bucket] = {}
        self._gauges: Gauges | None = None
        self._viewers: dict[tuple[str, str], float] = {}

    def push(self, buckets: list[Bucket], gauges: Gauges) -> None:
        for bucket in buckets:
            self._buckets[bucket.second] = bucket
        self._gauges = gauges
        oldest = int(time.time()) - WINDOW_SECONDS
        for second in [s for s in self._buckets if s < oldest]:
            del self._buckets[second]

    def window(self, now: int) -> FleetWindow:
        seconds = {s: b for s, b in dict(self._buckets).items() if now - WINDOW_SECONDS <= s < now}
        return FleetWindow(now, seconds, [self._gauges] if self._gauges else [])

    def viewer_touch(self, tenant_uuid: str, tenant_slug: str, *, ttl: int) -> None:
        self._viewers[(tenant_uuid, tenant_slug)] = time.time() + ttl

    def viewers(self) -> list[tuple[str, str]]:
        now = time.time()
        return sorted(viewer for viewer, until in dict(self._viewers).items() if until > now)


class RedisFleet:
    """Production mode: every web process pushes to Redis; any one reads the whole fleet."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:dash"

    def push(self, buckets: list[Bucket], gauges: Gauges) -> None:
        """One round trip: this process's finished seconds and its gauges, each key with a TTL.
        Raises `redis.RedisError` when Redis does not answer (the caller logs and goes on)."""
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            key = f"{self.prefix}:sec:{bucket.second}"
            pipe.hset(key, gauges.process, json.dumps(bucket.to_json(), separators=(",", ":")))
            pipe.expire(key, KEY_TTL_SECONDS)
        key = f"{self.prefix}:gauge:{int(time.time())}"
        pipe.hset(key, gauges.process, json.dumps([gauges.in_flight, gauges.pressure]))
        pipe.expire(key, GAUGE_STALE_SECONDS + 2)
        pipe.execute()

    def window(self, now: int) -> FleetWindow:
        """The last `WINDOW_SECONDS` before `now` and the gauges pushed in the last
        `GAUGE_STALE_SECONDS`, in one round trip. Raises `redis.RedisError`."""
        pipe = self.client.pipeline(transaction=False)
        seconds = range(now - WINDOW_SECONDS, now)
        for second in seconds:
            pipe.hgetall(f"{self.prefix}:sec:{second}")
        for second in range(now - GAUGE_STALE_SECONDS, now + 1):
            pipe.hgetall(f"{self.prefix}:gauge:{second}")
        replies: list[dict[bytes, bytes]] = pipe.execute()
        buckets = [Bucket.from_json(json.loads(raw)) for reply in replies[: len(seconds)] for raw in reply.values()]
        return FleetWindow(now, merge_seconds(buckets), _latest_gauges(replies[len(seconds) :]))

    def viewer_touch(self, tenant_uuid: str, tenant_slug: str, *, ttl: int) -> None:
        """A sorted set scored by each viewer's expiry (epoch s): one key for the whole fleet."""
        self.client.zadd(f"{self.prefix}:viewers", {f"{tenant_uuid}|{tenant_slug}": time.time() + ttl})

    def viewers(self) -> list[tuple[str, str]]:
        key = f"{self.prefix}:viewers"
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zrange(key, 0, -1)
        pipe.expire(key, VIEWERS_TTL_SECONDS)
        members: list[bytes] = pipe.execute()[1]
        return sorted(tuple(member.decode().split("|", 1)) for member in members)  # type: ignore[misc]


def _latest_gauges(replies: list[dict[bytes, bytes]]) -> list[Gauges]:
    latest: dict[str, Any] = {}
    for reply in replies:  # oldest second first: a later push overwrites an earlier one
        for process, raw in reply.items():
            latest[process.decode()] = json.loads(raw)
    return [Gauges(process, int(v[0]), float(v[1])) for process, v in sorted(latest.items())]

"""Pressure shared by every gateway process (SPEC 2 step 6: "combined across instances").

Each process writes its own score into one Redis hash, field = its id, value = "score:at_ms", and
reads everybody's in the same round trip (a pipeline). Reports older than `stale_ms` are dropped
and deleted, so a crashed process stops counting within seconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

from gateway.engine.resp import RedisUnavailable, RespClient, RespReplyError


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class FleetPressure:
    def __init__(self, redis: RespClient, prefix: str, *, me: str | None = None, stale_ms: int = 3000) -> None:
        self.redis = redis
        self.key = f"{prefix}pressure"
        self.me = me or process_id()
        self.stale_ms = stale_ms

    async def exchange(self, local_score: float, now_ms: int | None = None) -> list[float] | None:
        """Publishes this process's score; returns every fresh score (this one included), or None
        when Redis is unreachable (the caller then acts on its local score alone)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            *_, flat = await self.redis.pipeline(
                [
                    ["HSET", self.key, self.me, f"{local_score:.1f}:{now_ms}"],
                    ["PEXPIRE", self.key, self.stale_ms * 10],
                    ["HGETALL", self.key],
                ]
            )
        except RedisUnavailable:
            return None
        if isinstance(flat, RespReplyError):
            return None
        reports = dict(zip(flat[::2], flat[1::2], strict=True))
        fresh, stale = _split(reports, now_ms, self.stale_ms)
        if stale:
            with contextlib.suppress(RedisUnavailable, RespReplyError):  # cleanup; the next exchange retries
                await self.redis.execute("HDEL", self.key, *stale)
        return fresh


def _split(reports: dict[Any, Any], now_ms: int, stale_ms: int) -> tuple[list[float], list[Any]]:
    fresh: list[float] = []
    stale: list[Any] = []
    for field, raw in reports.items():
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        score, _, at = text.partition(":")
        try:
            if now_ms - int(at) <= stale_ms:
                fresh.append(float(score))
                continue
        except ValueError:
            pass
        stale.append(field)
    return fresh, stale

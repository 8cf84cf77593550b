"""The Python load generator, run as a child process: ``python -m bench.gateway.loadgen``.

Two modes against one URL, with a bearer token, on aiohttp keep-alive connections (uvloop):

- closed loop (``--connections N``): N workers, each sending its next request as soon as the
  previous one is answered; used instead of wrk when wrk is missing;
- open loop (``--rate R``): requests started on a fixed schedule of R/s whatever the answers do
  (no coordinated omission), which wrk cannot do; latency runs from each request's start.

Prints one JSON line: rps, p50_ms, p99_ms, non2xx, socket_errors, requests. Its CPU time is
measured by the parent (wait4), not here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop


@dataclass
class _Samples:
    latencies: list[float] = field(default_factory=list)
    non2xx: int = 0
    errors: int = 0
    first: float = 0.0
    last: float = 0.0


async def _one_request(session: aiohttp.ClientSession, url: str, samples: _Samples) -> None:
    sent = time.perf_counter()
    try:
        async with session.get(url) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        samples.errors += 1
        return
    done = time.perf_counter()
    samples.latencies.append(done - sent)
    samples.last = done
    if not 200 <= status < 300:
        samples.non2xx += 1


async def _closed_loop(
    session: aiohttp.ClientSession, url: str, connections: int, duration: float, samples: _Samples
) -> None:
    """`connections` workers, each sending its next request as soon as the previous one is answered."""
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await _one_request(session, url, samples)

    await asyncio.gather(*(worker() for _ in range(connections)))


async def _open_loop(session: aiohttp.ClientSession, url: str, rate: float, duration: float, samples: _Samples) -> None:
    """Requests started on a fixed schedule, whatever the answers do (no coordinated omission).

    Latency runs from the moment a request starts (pool wait included). The event loop's timers
    have millisecond resolution, so requests leave in small bunches around their scheduled time.
    """
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for i in range(max(1, round(rate * duration))):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one_request(session, url, samples))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    """One run as the options say; the summary printed as JSON."""
    samples = _Samples()
    connector = aiohttp.TCPConnector(limit=args.connections, keepalive_timeout=30)
    headers = {"Authorization": f"Bearer {args.jwt}"}
    timeout = aiohttp.ClientTimeout(total=2.0)  # wrk's socket timeout
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        samples.first = time.perf_counter()
        if args.rate:
            await _open_loop(session, args.url, args.rate, args.duration, samples)
        else:
            await _closed_loop(session, args.url, args.connections, args.duration, samples)
    wall = max(samples.last - samples.first, 1e-9)
    return {
        "rps": len(samples.latencies) / wall,
        "p50_ms": _percentile(samples.latencies, 0.50) * 1000,
        "p99_ms": _percentile(samples.latencies, 0.99) * 1000,
        "non2xx": samples.non2xx,
        "socket_errors": samples.errors,
        "requests": len(samples.latencies),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jwt", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64, help="closed loop: workers; open loop: pool size")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s on a fixed schedule (open loop)")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(generate(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
